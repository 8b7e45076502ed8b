#!/usr/bin/env bash
# bf16 against fp32 on the default run (docs/speed.md, "Does bf16 cost quality?"): `sagan train`'s
# default fmnist32 recipe (4000 steps of batch 64), once per precision and seed. Paired by seed: the
# same seed gives the same initial weights, data order and noise; only train.precision differs.
# Scored as the studies score runs (the endpoint fixed before the runs): training-time FID in the
# shipped classifier's features on 10000 fixed-latent samples every 500 steps, averaged over steps
# 3000, 3500 and 4000; then `sagan evaluate -n 10000 --features fmnist --metrics fid` of the final
# EMA generator (secondary). bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX): elsewhere it
# is emulated and hundreds of times slower, so run the bf16 runs first on such a machine; the fp32
# runs can finish anywhere.
#
# Resumable: a finished run (its eval JSON exists, or docs/bf16-quality/results.json has it, e.g. from
# another machine) is skipped, an unfinished one resumes from its newest checkpoint; SIGTERM stops it
# (the run checkpoints). The small results are collected into docs/bf16-quality/ by
# scripts/bf16_quality.py after every run; runs collected before stay there.
# Usage: [SEEDS="0 1"] [PRECISIONS="bf16 fp32"] bash scripts/bf16_quality.sh [OUT]
# (default /work/bf16-quality). Two at once on 2 cores: run two of these with OMP_NUM_THREADS=1 and
# a seed each.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-/work/bf16-quality}"
mkdir -p "$out"

for seed in ${SEEDS:-0 1}; do
  for precision in ${PRECISIONS:-bf16 fp32}; do
    name="$precision-s$seed"
    run="$out/$name"
    if ls "$run"/eval/*-fmnist-train.json >/dev/null 2>&1; then continue; fi
    # Collected before, maybe on another machine (bf16 runs need native bf16): not trained again.
    if python "$here/scripts/bf16_quality.py" --has "$here/docs/bf16-quality" "$name"; then continue; fi
    if [ -f "$run/config.yaml" ]; then
      sagan train --resume "$run" --no-progress
    else
      sagan train --out "$out" --name "$name" --no-progress --set "train.seed=$seed" \
        --set "train.precision=$precision" --set train.fid_every=500 --set train.fid_samples=10000 \
        --set train.ckpt_every=500
    fi
    sagan evaluate "$run" -n 10000 --features fmnist --metrics fid --out "$run/eval" --no-progress
    python "$here/scripts/bf16_quality.py" "$out" "$here/docs/bf16-quality" || true
  done
done

#!/usr/bin/env bash
# Candidate recipes for a default demo of at most 20 minutes (docs/speed.md, "A 20-minute demo"):
# each candidate is the fmnist32 preset with a few --set overrides and a number of steps that costs
# about 20 minutes of a quiet 2-core Zen 3 at the step rate `sagan bench` measures for its batch
# size; 2 seeds each. Every run ends with the same score as the shipped model's: FID in the shipped
# classifier's features, 10000 samples against the training images (`sagan evaluate -n 10000
# --features fmnist --metrics fid`), the EMA generator with its standing BN statistics.
#
# Resumable: a finished run (its eval JSON exists) is skipped, an unfinished one resumes from its
# newest checkpoint; SIGTERM stops it (the run checkpoints). The small results (eval JSON and
# metrics.csv per run) are copied into docs/demo-recipes/ by scripts/demo_recipes.py.
# Usage: [SEEDS="0 1"] bash scripts/demo_recipes.sh [OUT] [CANDIDATE...] (default /work/demo-recipes, all
# candidates, seeds 0 and 1)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-/work/demo-recipes}"
shift || true
mkdir -p "$out"

# name | steps | overrides. 900 steps x 64 images = 57600 images: 20 minutes at 48 images/s, the
# fp32 fmnist32 step's quiet rate on a 2-core Zen 3 (benchmarks/zen3-2026-12-06).
declare -A STEPS SETS
STEPS[base900]=900;   SETS[base900]=""
STEPS[lr2x]=900;      SETS[lr2x]="optim.lr_g=2e-4 optim.lr_d=8e-4"
STEPS[b32]=1800;      SETS[b32]="train.batch_size=32"
STEPS[b32lr2x]=1800;  SETS[b32lr2x]="train.batch_size=32 optim.lr_g=2e-4 optim.lr_d=8e-4"
# Round 2 (docs/speed.md): the learning rates further, and ema_decay 0.995 (a no-op at 1800 steps, found
# after the run: the warmup ramp (1+n)/(10+n) stays below 0.995 until step 1790; docs/models.md).
STEPS[b32lr4x]=1800;  SETS[b32lr4x]="train.batch_size=32 optim.lr_g=4e-4 optim.lr_d=1.6e-3"
STEPS[b32lr2xe995]=1800; SETS[b32lr2xe995]="train.batch_size=32 optim.lr_g=2e-4 optim.lr_d=8e-4 train.ema_decay=0.995"
# Round 3: half the widths (g_ch = d_ch = 8): 2.5x the images per second of width 16 at batch 32
# in an A B A B bench (benchmarks/zen3-2026-12-07-widths), so 2.5 x 57600 = 144000 images.
STEPS[w8b32lr2x]=4500; SETS[w8b32lr2x]="model.g_ch=8 model.d_ch=8 train.batch_size=32 optim.lr_g=2e-4 optim.lr_d=8e-4"
ORDER=(base900 lr2x b32 b32lr2x b32lr4x b32lr2xe995 w8b32lr2x)
cands=("$@")
[ ${#cands[@]} -gt 0 ] || cands=("${ORDER[@]}")

for seed in ${SEEDS:-0 1}; do
  for c in "${cands[@]}"; do
    [ -n "${STEPS[$c]+x}" ] || { echo "unknown candidate $c (known: ${ORDER[*]})" >&2; exit 2; }
    name="$c-s$seed"
    run="$out/$name"
    if ls "$run"/eval/*-fmnist-train.json >/dev/null 2>&1; then continue; fi
    sets=(--set "train.seed=$seed" --set train.fid_every=300 --set train.fid_samples=2000
          --set train.precision=fp32 --set train.ckpt_every=300)
    for kv in ${SETS[$c]}; do sets+=(--set "$kv"); done
    if [ -f "$run/config.yaml" ]; then
      sagan train --resume "$run" --no-progress
    else
      sagan train --out "$out" --name "$name" --steps "${STEPS[$c]}" "${sets[@]}" --no-progress
    fi
    sagan evaluate "$run" -n 10000 --features fmnist --metrics fid --out "$run/eval" --no-progress
    python "$here/scripts/demo_recipes.py" "$out" "$here/docs/demo-recipes"
  done
done

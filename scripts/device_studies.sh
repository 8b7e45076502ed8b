#!/usr/bin/env bash
# The paired studies of docs/experiments.md on a lent GPU machine, in one call of the device tool.
#
# On a 2-core CPU a study run takes one to four hours and no machine has outlived its session, so the
# 32 runs of scripts/run_studies.sh need many sessions. A GPU machine (16 cores, one GPU) can run many
# runs at once. This script is the whole device check, prepared and tried here on the CPU first:
#
#   bash scripts/device_studies.sh prepare            # here: Fashion-MNIST and the torch-fidelity wheel
#                                                     # into .device/ (ignored by git, about 31 MB)
#   device run: bash scripts/device_studies.sh run SECONDS     carry [".device"], timeout_s SECONDS + 150
#   bash scripts/device_studies.sh unpack FILES_AT/studies.tgz # here: into docs/studies/, then commit
#
# `run` checks the CUDA paths first (the CUDA test, a 30-step fmnist32 run in fp32 and bf16), then runs
# the attention study and, if time is left, the stabilisation study, each as its own study folder
# NAME-cuda (every run of them on that GPU, so each seed's arms are paired on one device), with the
# settings of scripts/run_studies.sh: fmnist32, 4000 steps, 4 seeds, fp32, training-time FID of 10000
# fixed-latent samples in the shipped classifier's features every 500 steps. It stops the studies
# (SIGTERM: the runs checkpoint, and those checkpoints are lost with the machine) SECONDS after it
# started, then writes $OUT/studies.tgz: the small files of every finished run (scripts/sync_study.py),
# which the next call carries back (they are in docs/studies/, tracked), so it trains only what is left.
# The protocol comes from scripts/study_settings.sh, as for run_studies.sh. JOBS (default 8) runs at once share the GPU; the runs' logs and speeds come back in $OUT/logs.tgz.
#
# SAGAN_DEVICE_SMOKE=1 shrinks every run (2 seeds of 2 arms, 20 steps, 200 samples) and writes
# NAME-smoke folders: it is how this script is tried on a CPU; its results are not for docs/.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
dev=.device
fmnist=/usr/share/datasets/fashion-mnist
export PYTHONUNBUFFERED=1

say() { echo "[device_studies $(date +%H:%M:%S)] $*"; }

prepare() {
  mkdir -p "$dev/fashion-mnist" "$dev/whl"
  [ -d "$fmnist" ] || { echo "error: $fmnist is missing: apt-get install dataset-fashion-mnist" >&2; exit 2; }
  cp -u "$fmnist"/*-ubyte* "$dev/fashion-mnist/"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$dev/whl" "torch-fidelity>=0.3,<0.5"
  du -sh "$dev"
}

smoke=${SAGAN_DEVICE_SMOKE:-0}
suffix=$([ "$smoke" = 1 ] && echo smoke || echo cuda)
docs=$([ "$smoke" = 1 ] && echo /tmp/device-smoke/docs/studies || echo docs/studies)  # a smoke run's stay out of docs/
source "$here/scripts/study_settings.sh"  # STUDY_ARGS, ATTENTION_ARMS: the protocol of run_studies.sh
if [ "$smoke" = 1 ]; then  # the same flags, later ones winning, on tiny runs of two arms
  study_args=("${STUDY_ARGS[@]}" --seeds 2 --steps 20 --fid-every 10 --fid-samples 200 --eval-samples 200
              --endpoint-evals 2)
  attention_arms=(--arms none,attn16)
  stabilisation_arms=(--arms sn-d,sn-gd)
else
  study_args=("${STUDY_ARGS[@]}")
  attention_arms=(--arms "$ATTENTION_ARMS")
  stabilisation_arms=()
fi

study() {  # KIND DEADLINE [--arms A,B]: run one study until it is done or the deadline (epoch seconds) passes
  local kind=$1 deadline=$2 name="$1-fmnist32-$suffix"
  shift 2
  local left=$((deadline - $(date +%s)))
  if [ "$left" -lt 60 ]; then say "$name: no time left, not started"; return 0; fi
  local folder="/tmp/studies/$name"
  study_folder_from_docs "$docs/$name" "$folder"
  say "$name: up to $left s, ${JOBS:-8} runs at once"
  local rc=0
  timeout --signal=TERM --kill-after=120 "$left" python3 -m sagan study "$kind" --preset fmnist32 "${study_args[@]}" "$@" \
    --set "data.root=$here/$dev/fashion-mnist" --jobs "${JOBS:-8}" --no-progress --out "$folder" || rc=$?
  say "$name: study exited with $rc"
  python3 scripts/sync_study.py "$folder" "$docs/$name" || true
}

run() {  # SECONDS: the whole device check
  local seconds=${1:?run SECONDS}
  local start deadline out=${OUT:-/tmp/device-out}
  start=$(date +%s); deadline=$((start + seconds))
  mkdir -p "$out"
  if [ -d "$dev/whl" ] && ls "$dev"/whl/*.whl >/dev/null 2>&1 && ! python3 -c "import torch_fidelity" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$dev"/whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, no install
  [ -f "$dev/fashion-mnist/train-images-idx3-ubyte.gz" ] || [ -f "$dev/fashion-mnist/train-images-idx3-ubyte" ] \
    || { echo "error: $dev/fashion-mnist is missing: run 'bash scripts/device_studies.sh prepare' here and carry $dev" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || say "no nvidia-smi"
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  nproc

  if python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "the CUDA paths: the CUDA test, then 30 steps in fp32 and in bf16"
    python3 -m pytest -q -p no:cacheprovider tests/test_precision.py 2>&1 | tail -3 || true
    for precision in fp32 bf16; do
      python3 -m sagan train --steps 30 --set train.precision=$precision --set "data.root=$here/$dev/fashion-mnist" \
        --set train.sample_every=30 --set train.ckpt_every=30 --out /tmp/smoke --name "$precision" --no-progress 2>&1 \
        | tail -4 || true
    done
  else
    say "no CUDA here: the CUDA checks are skipped"
  fi

  study attention "$deadline" "${attention_arms[@]}"
  study stabilisation "$deadline" "${stabilisation_arms[@]}"

  local root="$docs/../.." found  # only the NAME-cuda folders: unpacking must not touch the CPU studies
  found=$(cd "$root" && ls -d docs/studies/*-"$suffix" 2>/dev/null || true)
  if [ -n "$found" ]; then tar czf "$out/studies.tgz" -C "$root" $found; else say "no study results to bring back"; fi
  tar czf "$out/logs.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude=tb -C /tmp/studies . 2>/dev/null || true
  say "done after $(( $(date +%s) - start )) s"
}

unpack() {  # ARCHIVE: the studies.tgz of a device call, into docs/studies/
  local archive=${1:?unpack ARCHIVE}
  tar xzf "$archive" -C "$here"
  for folder in docs/studies/*-cuda; do
    [ -d "$folder" ] && python3 -m sagan study status "$folder" || true
  done
}

case "${1:-}" in
  prepare) prepare ;;
  run) run "${2:-}" ;;
  unpack) unpack "${2:-}" ;;
  *) echo "usage: bash scripts/device_studies.sh prepare | run SECONDS | unpack ARCHIVE" >&2; exit 2 ;;
esac

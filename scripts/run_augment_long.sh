#!/usr/bin/env bash
# The long small-data A/B of docs/experiments.md ("Small data sets"): off vs DiffAugment at 2000
# generator steps, on 2000 Fashion-MNIST images as a folder (2 seeds), then on 500 images (seed 0).
# About 2 h of a 2-core machine that trains fmnist32 at ~60 img/s per run with --jobs 2.
# Every command resumes where it stopped, so re-run this script after an interruption.
# Usage: bash scripts/run_augment_long.sh [STUDIES_DIR] (default /work/studies)
set -euo pipefail
out="${1:-/work/studies}"
here="$(dirname "$0")"
mkdir -p "$out/data"
for n_seeds in "2000 2" "500 1"; do
  set -- $n_seeds
  n=$1 seeds=$2
  [ -d "$out/data/fmnist$n" ] || python "$here/make_image_folder.py" --n "$n" --out "$out/data/fmnist$n"
  sagan study augment --set data.dataset=image_folder --set "data.root=$out/data/fmnist$n" --set data.channels=1 \
      --set train.fid_features=fmnist --features fmnist --arms off,diffaugment --seeds "$seeds" --steps 2000 --jobs 2 \
      --out "$out/augment-fmnist$n-long" --no-progress
  python "$here/eval_heldout.py" "$out/augment-fmnist$n-long"/runs/* --out "$out/augment-fmnist$n-long/heldout.json"
done

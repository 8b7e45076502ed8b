#!/usr/bin/env bash
# The studies behind docs/experiments.md, on the fmnist32 model, at CPU scale: sized so all three
# fit in about two hours of a 2-core machine that trains fmnist32 at ~110 img/s (`sagan bench`).
# Every command resumes where it stopped, so re-run this script after an interruption.
# Usage: bash scripts/run_studies.sh [STUDIES_DIR] (default /work/studies)
set -euo pipefail
out="${1:-/work/studies}"
mkdir -p "$out"
sagan study stabilisation --seeds 2 --steps 600 --jobs 2 --out "$out/stabilisation-fmnist32" --no-progress
# Small data: 2000 Fashion-MNIST images as a folder (scripts/make_image_folder.py), with and without DiffAugment.
[ -d "$out/data/fmnist2000" ] || python "$(dirname "$0")/make_image_folder.py" --n 2000 --out "$out/data/fmnist2000"
sagan study augment --set data.dataset=image_folder --set "data.root=$out/data/fmnist2000" --set data.channels=1 \
    --set train.fid_features=fmnist --features fmnist --arms off,diffaugment --seeds 2 --steps 500 --jobs 2 \
    --out "$out/augment-fmnist2000" --no-progress
sagan study attention --seeds 2 --steps 250 --jobs 2 --out "$out/attention-fmnist32" --no-progress

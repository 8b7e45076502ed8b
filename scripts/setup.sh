#!/usr/bin/env bash
# Set up sagan-torch on a fresh machine: PyTorch, the package with its test extras, and (on
# Debian/Ubuntu, as root) the offline Fashion-MNIST package. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Fashion-MNIST from Debian when we can; elsewhere torchvision downloads it on first use.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  pkgs="dataset-fashion-mnist $(grep -v '^#' .ci/apt-packages 2>/dev/null | tr '\n' ' ' || true)"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
  fi
fi

# The torch/torchvision pair this project is tested with (override with TORCH_SPEC="" to keep yours).
TORCH_SPEC=${TORCH_SPEC-"torch==2.14.1 torchvision==0.29.1"}
if [ -n "$TORCH_SPEC" ]; then
  $PY -m pip install -q $TORCH_SPEC
fi
$PY -m pip install -q -e ".[dev]"
if [ -f .ci/after-install ]; then bash .ci/after-install; fi
echo "sagan-torch is installed: try 'sagan train' (or 'sagan --help')"

#!/usr/bin/env bash
# Installs sagan-torch's core alone (no extra) into a fresh virtual environment and runs
# scripts/core_smoke.py there: from_pretrained + sampling work, and a command that needs an extra
# says which in one line. With --floors, every core dependency is installed at the lowest version
# pyproject.toml declares (pkg==floor), which checks that those floors are real.
#
# torch and torchvision are installed as TORCH_SPEC says; by default the versions this interpreter
# has (pip finds them on local disk or in its cache), because their floors (torch 2.4) are CUDA
# wheels of gigabytes on PyPI. Give TORCH_SPEC="torch==2.4.0 torchvision==0.19.0" where they can be
# installed. VENV (default: a temporary folder, removed at the end) keeps the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
floors=0
[ "${1:-}" = "--floors" ] && floors=1

keep=${VENV:+1}
VENV=${VENV:-$(mktemp -d)/venv}
[ -z "$keep" ] && trap 'rm -rf "$(dirname "$VENV")"' EXIT
TORCH_SPEC=${TORCH_SPEC-$($PY -c 'import torch, torchvision; print(" ".join(f"{m.__name__}=={m.__version__.split(chr(43))[0]}" for m in (torch, torchvision)))')}

# The core dependencies from pyproject.toml, as declared or pinned at their floors; torch and
# torchvision come from TORCH_SPEC.
deps=$($PY - "$floors" <<'PY'
import re, sys, tomllib
floors = sys.argv[1] == "1"
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0)
    if name.lower() in ("torch", "torchvision"):
        continue
    print(re.sub(r">=", "==", dep) if floors else dep)
PY
)
echo "check_install: core dependencies: $(echo $deps) $TORCH_SPEC"
$PY -m venv "$VENV"
"$VENV/bin/python" -m pip install -q $TORCH_SPEC $deps
"$VENV/bin/python" -m pip install -q --no-deps .
"$VENV/bin/python" -m pip check
"$VENV/bin/python" -m pip list --format=freeze | grep -iE "^(torch|torchvision|numpy|pillow|pyyaml|tqdm|safetensors|huggingface.hub)==" | tr '\n' ' '
echo
cd "$(dirname "$VENV")" && PATH="$VENV/bin:$PATH" "$VENV/bin/python" "$OLDPWD/scripts/core_smoke.py"
echo "check_install: the core$([ $floors = 1 ] && echo ' at its floors') works"

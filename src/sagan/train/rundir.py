"""Run directories: never overwritten, always holding the resolved config and code version."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torchvision

import sagan
from sagan.config import Config


def code_version() -> dict[str, Any]:
    """Package version, and the git commit (plus a dirty flag) when run from a checkout."""
    info: dict[str, Any] = {"sagan_torch": sagan.__version__, "torch": str(torch.__version__),
                            "torchvision": str(torchvision.__version__), "python": platform.python_version()}
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                                   capture_output=True, text=True, timeout=5)
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def new_run_dir(out_root: str | Path, name: str) -> tuple[Path, bool]:
    """Create ``out_root/name``; if it exists, create ``name-2``, ``name-3``... instead.

    Returns the directory and whether the name had to change.
    """
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    candidate, i = root / name, 1
    while True:
        try:
            candidate.mkdir()
            return candidate, i > 1
        except FileExistsError:
            i += 1
            candidate = root / f"{name}-{i}"


def default_run_name(cfg: Config) -> str:
    return cfg.name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_run_info(run_dir: Path, cfg: Config) -> None:
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    info = code_version()
    info["command"] = sys.argv
    (run_dir / "version.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

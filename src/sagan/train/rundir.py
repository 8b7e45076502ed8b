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
from sagan.fileio import atomic_write_text


class RunDir:
    """Where everything of one run lives (README: "What lands in a run directory")."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    config = property(lambda self: self.path / "config.yaml")
    version = property(lambda self: self.path / "version.json")
    metrics = property(lambda self: self.path / "metrics.csv")
    tensorboard = property(lambda self: self.path / "tb")
    samples = property(lambda self: self.path / "samples")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")
    attention = property(lambda self: self.path / "attention")
    eval = property(lambda self: self.path / "eval")
    events = property(lambda self: self.path / "events.log")
    report = property(lambda self: self.path / "report.html")


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


def write_run_info(run_dir: Path, cfg: Config, command: list[str] | None = None) -> None:
    """Write ``config.yaml`` and ``version.json`` (atomically).

    On a resume the config may differ only in train.* / data location, and ``version.json`` keeps
    the original start (code version, command) and appends one entry per resume.
    """
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    info = code_version()
    info["command"] = command if command is not None else sys.argv
    info["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = run_dir / "version.json"
    record: dict[str, Any] = info
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict):
            record = previous
            record.setdefault("resumes", []).append(info)
    atomic_write_text(path, json.dumps(record, indent=2))

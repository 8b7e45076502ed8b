"""Checkpoints: atomic writes, rotation, safe loading.

A checkpoint is a dict of tensors and plain values written with ``torch.save`` to a temporary
file in the same directory, flushed and fsynced, then renamed over the final name, so a crash
or a full disk never leaves a half-written file where a good one was. Files are loaded with
``weights_only=True``: a checkpoint is data, never code.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or is not one this code can load."""


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"ckpt_{step:08d}.pt"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def atomic_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(f"could not write checkpoint {path}: {e}") from e
        raise


def save_checkpoint(state: dict[str, Any], ckpt_dir: Path, step: int, keep: int) -> Path:
    """Write ``state`` for ``step`` atomically, then delete all but the newest ``keep``."""
    state = dict(state, format_version=FORMAT_VERSION, step=step)
    path = checkpoint_path(ckpt_dir, step)
    atomic_save(state, path)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        try:
            old.unlink()
        except OSError:
            pass
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(f"{path} is not a loadable sagan checkpoint (it is refused when it holds "
                              f"anything but tensors and plain values): {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a sagan checkpoint (no format_version)")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {state['format_version']}, newer than this "
                              f"code's {FORMAT_VERSION}; upgrade sagan-torch to load it")
    return state


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its newest checkpoint)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        ckpts = list_checkpoints(p / "checkpoints")
        if not ckpts:
            raise CheckpointError(f"run directory {p} has no checkpoints in {p / 'checkpoints'}")
        return ckpts[-1]
    raise CheckpointError(f"{p} is neither a checkpoint file nor a run directory")


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln.strip() for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
    return detail[:400]

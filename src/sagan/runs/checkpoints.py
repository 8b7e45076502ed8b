"""Checkpoints: atomic writes, rotation, safe loading (:class:`Checkpoints`: the ones of a run folder).

A checkpoint is a dict of tensors and plain values written with ``torch.save`` to a temporary
file in the same directory, flushed and fsynced, then renamed over the final name, so a crash
or a full disk never leaves a half-written file where a good one was. Files are loaded with
``weights_only=True``: a checkpoint is data, never code.

Rotation only ever deletes files named ``ckpt_<8 digits>.pt``; anything else in the directory
(``best.pt`` kept by metric tracking, files a user copied there) is never touched.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from sagan.config import migrate_model_section
from sagan.errors import CheckpointError, CheckpointWriteError, plural
from sagan.fileio import atomic_path, stale_temp_files
from sagan.runs.folder import RunDir

FORMAT_VERSION = 1
CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")
REQUIRED_KEYS = ("G", "D", "G_ema", "opt_g", "opt_d", "stream", "rng", "config", "data", "step")


class Checkpoints:
    """The checkpoints of one run folder (``RUN/checkpoints``): lists them, picks one, writes one and
    prunes the old ones, and removes what a killed write left behind. Only ``ckpt_<8 digits>.pt``
    files are checkpoints here: ``best.pt`` and anything a user put in the folder are never listed,
    pruned or removed."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, step: int) -> Path:
        """Where the checkpoint of ``step`` is (or would be) written."""
        return self.folder / f"ckpt_{step:08d}.pt"

    def list(self) -> list[Path]:
        """The checkpoints, oldest first; none when the folder does not exist."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := CKPT_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def newest(self) -> Path | None:
        ckpts = self.list()
        return ckpts[-1] if ckpts else None

    def newest_loadable(self, map_location: str | torch.device = "cpu",
                        on_skip: Callable[[CheckpointError], None] | None = None
                        ) -> tuple[dict[str, Any] | None, Path | None]:
        """The newest checkpoint that loads, and its path; (None, None) when there is none.

        A damaged one is reported through ``on_skip`` and the one before it tried; one of a newer
        format is refused (``CheckpointError``), as is a folder whose checkpoints all fail.
        """
        ckpts = self.list()
        for cand in reversed(ckpts):
            try:
                return load_checkpoint(cand, map_location=map_location), cand
            except CheckpointError as e:
                if "newer than this code" in str(e):
                    raise
                if on_skip is not None:
                    on_skip(e)
        if ckpts:
            raise CheckpointError(f"none of the {plural(len(ckpts), 'checkpoint')} in {self.folder} can be read; "
                                  "see the warnings above")
        return None, None

    def save(self, state: dict[str, Any], step: int, keep: int) -> Path:
        """Write ``state`` for ``step`` atomically, then prune all but the newest ``keep``."""
        path = self.path(step)
        atomic_save(dict(state, format_version=FORMAT_VERSION, step=step), path)
        self.prune(keep, spare=path)
        return path

    def prune(self, keep: int, spare: Path | None = None) -> None:
        """Delete all but the newest ``keep`` (at least 1) checkpoints, never ``spare``."""
        for old in self.list()[:-max(1, keep)]:
            if old == spare:
                continue
            try:
                old.unlink()
            except OSError:
                pass

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temporary files left by a write that was killed (SIGKILL, power loss); returns them."""
        removed = []
        for p in stale_temp_files(self.folder, r".+\.pt"):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
        return removed


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`sagan.fileio.atomic_path`; a failed write is a ``CheckpointWriteError``."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except Exception as e:  # torch.save reports a full disk as RuntimeError, not OSError
        raise CheckpointWriteError(f"could not write checkpoint {path}: {type(e).__name__}: "
                                   f"{_first_line(e)} ({_space_left(path.parent)})") from e
    # KeyboardInterrupt and friends propagate: the temporary file is gone, the old checkpoint intact


def _space_left(folder: Path) -> str:
    """Free space where the checkpoint goes: the usual reason a write fails, named in the error."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.0f} MiB free on that disk; a full disk or a file-size limit makes torch.save fail"


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        if "GLOBAL" in str(e):  # a pickle that would import a function or class: refused, nothing ran
            raise CheckpointError(f"{path} is refused: not a loadable sagan checkpoint (only tensors and plain "
                                  f"values are accepted, never code): {type(e).__name__}: {_first_line(e)}") from None
        raise CheckpointError(f"{path} cannot be read: the file is damaged, incomplete or not a sagan checkpoint "
                              "(not a loadable sagan checkpoint, so it is refused; nothing in it ran): "
                              f"{type(e).__name__}: {_first_line(e).split('. ')[0] or 'it ends early'}") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a sagan checkpoint (no format_version)")
    version = state["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path} has an invalid checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, newer than this "
                              f"code's {FORMAT_VERSION}; upgrade sagan-torch to load it")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a complete sagan checkpoint: missing {', '.join(missing)}")
    return state


def architecture_differences(state: dict[str, Any], model_cfg: dict[str, Any], data_meta: dict[str, Any],
                             modules: dict[str, torch.nn.Module] | None = None) -> list[str]:
    """What differs between a checkpoint and the model we are about to load it into (empty: compatible).

    Compares the config's ``model`` section, the data's classes/channels, and (when ``modules`` is
    given, e.g. ``{"G": G, "D": D, "G_ema": G}``) every state-dict key and tensor shape.
    """
    diffs = []
    saved_model = state.get("config", {}).get("model", {}) if isinstance(state.get("config"), dict) else {}
    saved_model = migrate_model_section(saved_model)  # keys added since it was written, as they were meant
    for key in sorted(set(saved_model) | set(model_cfg)):
        a, b = saved_model.get(key, "<absent>"), model_cfg.get(key, "<absent>")
        if a != b:
            diffs.append(f"model.{key}: checkpoint {a!r}, this run {b!r}")
    saved_data = state.get("data", {}) if isinstance(state.get("data"), dict) else {}
    for key in ("num_classes", "channels"):
        if key in saved_data and key in data_meta and saved_data[key] != data_meta[key]:
            diffs.append(f"data {key}: checkpoint {saved_data[key]!r}, this run {data_meta[key]!r}")
    for name, module in (modules or {}).items():
        saved = state.get(name)
        if not isinstance(saved, dict):
            diffs.append(f"{name}: missing from the checkpoint")
            continue
        own = module.state_dict()
        for k in sorted(set(own) - set(saved))[:5]:
            diffs.append(f"{name}.{k}: missing from the checkpoint")
        for k in sorted(set(saved) - set(own))[:5]:
            diffs.append(f"{name}.{k}: in the checkpoint but not in this model")
        for k in sorted(set(own) & set(saved)):
            ts = saved[k]
            if isinstance(ts, torch.Tensor) and tuple(ts.shape) != tuple(own[k].shape):
                diffs.append(f"{name}.{k}: checkpoint shape {tuple(ts.shape)}, this model {tuple(own[k].shape)}")
    return diffs


def check_compatible(path: Path, state: dict[str, Any], model_cfg: dict[str, Any], data_meta: dict[str, Any],
                     modules: dict[str, torch.nn.Module] | None = None) -> None:
    """Raise ``CheckpointError`` naming every difference when ``state`` is from another architecture."""
    diffs = architecture_differences(state, model_cfg, data_meta, modules)
    if diffs:
        shown = "\n  ".join(diffs[:12]) + (f"\n  ... and {len(diffs) - 12} more" if len(diffs) > 12 else "")
        raise CheckpointError(f"{path} was made for another architecture and is refused:\n  {shown}\n"
                              "Resume it with the config it was trained with, or start a new run.")


def save_best(state: dict[str, Any], path: Path, step: int, best: dict[str, Any]) -> None:
    """Write the best-so-far checkpoint (``best.pt``: a full checkpoint plus its ``best`` record)."""
    atomic_save(dict(state, format_version=FORMAT_VERSION, step=step, best=best), path)


def read_best(path: Path) -> tuple[float, int]:
    """(FID, step) recorded in ``best.pt``; (inf, -1) when there is none or it cannot be read."""
    record = read_best_record(path)
    return (float(record["fid"]), int(record["step"])) if record else (float("inf"), -1)


def read_best_record(path: Path) -> dict[str, Any] | None:
    """The ``best`` record of ``best.pt`` (fid, step, features, num_samples); None when absent or unreadable."""
    if not Path(path).is_file():
        return None
    try:  # mmap: only the small "best" record is actually read
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        record = dict(state["best"])
        float(record["fid"]), int(record["step"])
        return record
    except Exception:  # noqa: BLE001 - an unreadable best.pt is simply replaced by the next best
        return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its newest checkpoint)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        newest = Checkpoints(RunDir(p).checkpoints).newest()
        if newest is None:
            raise CheckpointError(f"run directory {p} has no checkpoints in {RunDir(p).checkpoints}")
        return newest
    raise CheckpointError(f"{p} is neither a checkpoint file nor a run directory")


def _first_line(e: Exception) -> str:
    """The informative line of an error (for weights_only refusals: what was blocked, not the advice
    to load with weights_only=False, which would run the code)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "unsupported" in ln.lower()), None)
    if detail is None:
        detail = next((ln for ln in lines if not ln.startswith("Weights only load failed")), lines[0] if lines else "")
    elif "Weights only load failed" in str(e):
        detail = f"it holds something other than tensors and plain values ({detail})"
    return detail[:400]

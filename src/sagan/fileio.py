"""Atomic file writes: the one way this package writes a file a user keeps.

The content goes to a temporary file in the same directory (named ``.NAME.<random>.tmp``), is
flushed and fsynced, then renamed over ``NAME``, and the directory entry is fsynced: a crash, a
full disk or Ctrl-C never leaves a half-written file where a good one was. On failure the
temporary file is removed and the exception propagates. Imports nothing from the package.

Reading a ``torch.save`` file that did not come from this process goes through
:func:`load_plain_tensors`: data only, never code.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator

TEMP_RE = re.compile(r"^\..+\.[^.]+\.tmp$")  # names of atomic_path's temporary files (left by a kill)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; after the block it replaces ``path``, durably.

    Writers that pick a format from the file name (PIL, matplotlib) must be told the format,
    since the temporary name ends in ``.tmp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets what open() would give it
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp_path)`` then rename over ``path``; returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def stale_temp_files(folder: str | Path, name_pattern: str = ".*") -> list[Path]:
    """Temporary files of atomic writes in ``folder`` whose final name matches ``name_pattern``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pat = re.compile(rf"^\.({name_pattern})\.[^.]+\.tmp$")
    return sorted(p for p in folder.iterdir() if pat.match(p.name))


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; after the block it is renamed to ``path``.

    ``path`` must not exist (a folder is never replaced: it may hold a user's results). On
    failure the temporary folder and what was written into it are removed.
    """
    import shutil

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o666 & ~_umask())  # some writers (safetensors) make their files private
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


class NotPlainTensors(ValueError):
    """A file :func:`load_plain_tensors` refused; the message says why, starting with a verb
    ("is empty", "is not a plain tensor file (...)"), for the caller to put after the file name."""


def _refusal_detail(e: BaseException) -> str:
    """The informative line of an unpickling error: what was refused, not torch's advice to load
    with ``weights_only=False`` (which would run the code)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "unsupported" in ln.lower()), None)
    if detail is None:
        detail = next((ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file an issue"))),
                      "")
    return (detail or type(e).__name__)[:300]


def load_plain_tensors(path: str | Path) -> object:
    """The content of a ``torch.save`` file, read as data: tensors and plain values (numbers,
    strings, lists, tuples, dicts) only, on the CPU. A pickle that would call a function or build
    any other object is refused before anything runs (``torch.load(weights_only=True)``).

    Raises :class:`NotPlainTensors` for an empty, unreadable or refused file.
    """
    import warnings

    import torch

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise NotPlainTensors(f"cannot be read ({e.strerror or e})") from None
    if size == 0:
        raise NotPlainTensors("is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling and archive errors come in many types
        raise NotPlainTensors(f"is not a plain tensor file: it holds something other than tensors and plain "
                              f"values, or is damaged ({_refusal_detail(e)})") from None

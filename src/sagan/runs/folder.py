"""Run directories: never overwritten, always holding the resolved config and code version, and
written by one process at a time (:func:`acquire_run_lock`); :func:`open_run_folder` picks the one a
``sagan train`` writes (resumed, an elastic restart's own, or new) and locks it."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no lock
    fcntl = None  # type: ignore[assignment]

import torch
import torchvision

import sagan
from sagan import distributed as dist_utils
from sagan.config import Config
from sagan.errors import UsageError
from sagan.fileio import atomic_write_text
from sagan.runs import elastic


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
    lock = property(lambda self: self.path / LOCK_NAME)


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


def default_run_name(cfg: Config, world: int = 1) -> str:
    """``cfg.name``; else, for a torchrun group (``world`` > 1) with a rendezvous id,
    ``PRESET-<rendezvous id>`` (the same after every elastic restart, so the restarted group finds
    its folder); else ``PRESET-DATE-TIME``."""
    return (cfg.name or (elastic.elastic_run_name(cfg.preset) if world > 1 else None)
            or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")


def write_run_info(run_dir: Path, cfg: Config, command: list[str] | None = None,
                   machine: dict[str, Any] | None = None) -> None:
    """Write ``config.yaml`` and ``version.json`` (atomically).

    On a resume the config may differ only in train.* / data location, and ``version.json`` keeps
    the original start (code version, command, ``machine``: :func:`sagan.machine.describe`) and
    appends one entry per resume.
    """
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    info = code_version()
    info["command"] = command if command is not None else sys.argv
    if machine is not None:
        info["machine"] = machine
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


def run_history(run_dir: Path) -> list[dict[str, Any]]:
    """Who trained a run, from its ``version.json``: one entry for the start, then one per resume,
    each ``{"machine", "threads", "commit", "dirty", "time"}`` (``machine`` the processor, or "not
    recorded" for an entry written before the record had it; the others None where missing); nothing
    when there is no readable version.json."""
    try:
        record = json.loads((Path(run_dir) / "version.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict):
        return []
    out = []
    for entry in (record, *(r for r in record.get("resumes", []) if isinstance(r, dict))):
        machine = entry.get("machine") if isinstance(entry.get("machine"), dict) else {}
        threads, commit, dirty = machine.get("threads"), entry.get("git_commit"), entry.get("git_dirty")
        out.append({"machine": str(machine["processor"]) if machine.get("processor") else "not recorded",
                    "threads": threads if isinstance(threads, int) else None,
                    "commit": commit if isinstance(commit, str) and commit else None,
                    "dirty": dirty if isinstance(dirty, bool) else None,
                    "time": entry.get("time") if isinstance(entry.get("time"), str) else None})
    return out


def machines_and_threads(history: list[dict[str, Any]]) -> list[str]:
    """The machines of a :func:`run_history` with their thread counts ("PROCESSOR, N threads"), each
    once, in order: both change an fp32 run's rounding (docs/experiments.md)."""
    return list(dict.fromkeys(h["machine"] + (f", {h['threads']} threads" if h.get("threads") else "")
                              for h in history))


def history_machines(history: list[dict[str, Any]]) -> list[str]:
    """The processors of a :func:`run_history`, each once, in order."""
    return list(dict.fromkeys(h["machine"] for h in history))


def run_machines(run_dir: Path) -> list[str]:
    """The processors that trained a run (:func:`run_history`: the start, then every resume), each
    once, in order."""
    return history_machines(run_history(run_dir))


# --------------------------------------------------------------------------- one writer per run

LOCK_NAME = ".lock"


class RunLockedError(UsageError):
    """Another process is writing the run folder (it holds the folder's lock)."""


_HELD_FDS: set[int] = set()  # lock file descriptors this process holds


def _forget_locks_in_child() -> None:
    """After a fork (DataLoader workers): the child closes its copies of the lock descriptors, so
    that only the process that took the lock holds it (a SIGKILLed trainer's workers, still winding
    down, must not keep the run locked). Closing a copy does not release the parent's lock."""
    for fd in list(_HELD_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


class RunLock:
    """The lock of one run folder, held until :meth:`release` (or the process ends, however it ends:
    the kernel releases an ``flock`` with the last descriptor, so a SIGKILL leaves no stale lock)."""

    def __init__(self, path: Path, fd: int | None, note: str | None = None):
        self.path, self._fd, self.note = path, fd, note

    @property
    def held(self) -> bool:
        return self._fd is not None and self._fd in _HELD_FDS

    def release(self) -> None:
        if self.held:
            _HELD_FDS.discard(self._fd)
            os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        pid, host, since = int(info["pid"]), str(info["host"]), str(info["since"])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "another process (it has not said which yet)"
    gone = ""
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            gone = "; that process has ended, a process it started may still hold the lock"
        except OSError:
            pass
    return f"process {pid} on {host}, since {since}{gone}"


def acquire_run_lock(run_dir: str | Path, wait: float = 0.0) -> RunLock:
    """Take the one-writer lock of ``run_dir`` (an advisory ``flock`` on ``run_dir/.lock``).

    ``sagan train`` holds it for the whole run; readers (``sample``, ``evaluate``, ``report``) never
    take it. While another process holds it, tries again for ``wait`` seconds, then raises
    :class:`RunLockedError` naming the holder (pid, host, since when). The holder's pid, host and
    start time are written into the lock file. On a file system without ``flock`` (or without
    ``fcntl``) the run goes on unlocked and the returned lock's ``note`` says so.
    """
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        return RunLock(path, None, "this system has no fcntl.flock: the run folder is not locked")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UsageError(f"cannot create the lock file {path} ({e.strerror}); is the run folder writable?") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"run folder {run_dir} is being written by another sagan train ({holder}); a run has one "
                    "writer: wait for it to end (or stop it), then resume. Reading commands (sample, evaluate, "
                    "report) work meanwhile") from None
            time.sleep(0.2)
        except OSError as e:  # e.g. ENOLCK: a network file system without locks
            os.close(fd)
            return RunLock(path, None, f"the run folder cannot be locked ({e.strerror}): make sure no other "
                                       "process trains into it")
    _HELD_FDS.add(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    except OSError:
        pass  # who holds it is a courtesy for the refusal message; the lock itself is held
    return RunLock(path, fd)


# --------------------------------------------------------------------------- the folder a run writes

ELASTIC_LOCK_WAIT_S = 60.0  # after an elastic restart, how long rank 0 waits for the killed group to let go


def lock_run(run_dir: str | Path, held: contextlib.ExitStack, say=print) -> None:
    """Hold ``run_dir``'s one-writer lock until ``held`` closes (``RunLockedError`` when another
    process trains into it). After an elastic restart the killed group may still be exiting, so the
    lock is waited for (:data:`ELASTIC_LOCK_WAIT_S`)."""
    wait = ELASTIC_LOCK_WAIT_S if dist_utils.elastic_restart_count() > 0 else 0.0
    lock = held.enter_context(acquire_run_lock(run_dir, wait=wait))
    if lock.note:
        say(f"note: {lock.note}")


class NewRunFolder:
    """A run folder the command created: removed again when the command is refused (a UsageError)
    before training starts, so that a refusal (e.g. --init-from weights that do not fit) leaves no
    run folder behind. ``training = True`` once the folder holds a run."""

    def __init__(self, path: Path):
        self.path, self.training = path, False

    def __enter__(self) -> "NewRunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, UsageError) and not self.training:
            shutil.rmtree(self.path, ignore_errors=True)


def open_run_folder(out_root: str | Path, cfg: Config, resume: str | Path | None, dist: dist_utils.DistInfo,
                    held: contextlib.ExitStack, say=print) -> tuple[Path, bool, NewRunFolder | None]:
    """(run folder, whether it continues a run, the new folder to mark ``training`` once it holds a
    run): ``resume`` (locked by the caller already, before its data was read), a restarted torchrun
    group's own folder (:func:`sagan.runs.elastic.find_elastic_run`), or a new ``out_root/NAME``
    (:func:`default_run_name`; never an existing folder: ``NAME-k`` when it exists). Rank 0 decides,
    holds the lock until ``held`` closes, and tells the other ranks."""
    if resume:
        return Path(resume), True, None
    run_dir, resuming, new_folder = None, False, None
    if dist.is_main:
        name = default_run_name(cfg, dist.world)
        # A restarted torchrun worker group continues its own run directory (docs/distributed.md).
        run_dir = elastic.find_elastic_run(out_root, name)
        resuming = run_dir is not None
        if resuming:
            lock_run(run_dir, held, say)
            say(f"elastic restart {dist_utils.elastic_restart_count()}: continuing {run_dir}")
        else:
            run_dir, renamed = new_run_dir(out_root, name)
            new_folder = held.enter_context(NewRunFolder(run_dir))
            lock_run(run_dir, held, say)
            if renamed:
                say(f"note: {Path(out_root) / name} exists and is left untouched; writing to {run_dir} instead")
            elastic.mark_elastic_run(run_dir)
    run_dir, resuming = dist_utils.broadcast_object((run_dir, resuming), dist)
    return run_dir, resuming, new_folder

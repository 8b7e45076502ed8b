"""Train and evaluate every arm x seed of a study, as child ``sagan`` processes.

Each run is the ``sagan train`` command ``--list`` prints (``sagan train --resume DIR`` when its
directory exists but has not reached ``train.steps``), then ``sagan evaluate``; a run that is
trained and evaluated is skipped, so re-running the same study command continues where it stopped.
Up to ``jobs`` runs go at once, their threads split between them. Output of every child goes to
``STUDY/logs/RUN.log``; the wall time of every child to ``STUDY/logs/RUN.json``.

Signals: the first SIGTERM/SIGINT is passed on to the children as one SIGTERM (they finish their
step, checkpoint and exit), then the study stops with 128 + the signal number. The children run in
their own sessions, so a terminal's Ctrl-C reaches them only through the study, once; and on Linux
they get SIGTERM if the study itself is killed (``PR_SET_PDEATHSIG``), so no run trains on unowned.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from sagan.errors import SaganError, exit_code_for_signal, signal_name
from sagan.fileio import atomic_write_text
from sagan.runs.checkpoints import Checkpoints
from sagan.runs.folder import RunDir
from sagan.signals import StopRequest
from sagan.study.arms import Arm, StudySpec

LOGS_DIR = "logs"


class StudyInterrupted(SaganError):
    def __init__(self, signum: int, folder: str):
        self.exit_code = exit_code_for_signal(signum)
        super().__init__(f"stopped by {signal_name(signum)}; the runs wrote checkpoints; re-run the same command "
                         f"to continue (finished runs are skipped), or 'sagan study collect {folder}' for what is done")

    def user_message(self) -> str:
        return str(self)


class StudyFailed(SaganError):
    def user_message(self) -> str:
        return str(self)


# --------------------------------------------------------------------------- state of one run

def evaluation_file(run_dir: Path, step: int) -> Path | None:
    """The ``sagan evaluate`` record of the EMA generator at ``step`` (train split), if written."""
    found = sorted(RunDir(run_dir).eval.glob(f"step_{step:08d}-*-train.json"))
    return found[0] if found else None


def run_state(spec: StudySpec, arm: Arm, seed: int, tidy: bool = True) -> tuple[str, int]:
    """(state, step): ``new``, ``unfinished`` (trained to step), ``trained`` (not evaluated) or ``done``.
    ``tidy`` (the runner's): an empty run folder left by a kill is removed; a reader passes False."""
    d = spec.run_dir(arm, seed)
    if d.is_dir() and not any(d.iterdir()):  # made, then killed before its config was written: nothing to keep
        if tidy:
            d.rmdir()  # (rmdir only removes it empty)
        return "new", 0
    if not d.exists():
        return "new", 0
    steps = spec.total_steps
    if evaluation_file(d, steps):  # evaluated at the last step: done, also when only its small files were kept
        return "done", steps        # (a run copied from docs/studies without checkpoints, see scripts/sync_study.py)
    if Checkpoints(RunDir(d).checkpoints).path(steps).is_file():
        return "trained", steps
    ckpts = Checkpoints(RunDir(d).checkpoints).list()
    step = int(ckpts[-1].stem.split("_")[-1]) if ckpts else 0
    return "unfinished", step


def next_command(spec: StudySpec, arm: Arm, seed: int) -> tuple[str, list[str]] | None:
    """What this run needs next (``train``, ``resume`` or ``evaluate``, and the command), or None when done."""
    state, _ = run_state(spec, arm, seed)
    if state == "new":
        return "train", spec.train_command(arm, seed)
    if state == "unfinished":
        return "resume", ["sagan", "train", "--resume", str(spec.run_dir(arm, seed)), "--no-progress"]
    if state == "trained":
        return "evaluate", spec.evaluate_command(arm, seed)
    return None


# --------------------------------------------------------------------------- child processes

def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    name: str
    what: str
    command: list[str]
    process: subprocess.Popen
    started: float = field(default_factory=time.time)
    log: object = None


def _record_segment(folder: Path, name: str, what: str, command: list[str], seconds: float, rc: int,
                    threads: int | None) -> None:
    path = folder / f"{name}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"segments": []}
    except (OSError, ValueError):
        record = {"segments": []}
    record["segments"].append({"what": what, "seconds": round(seconds, 1), "exit_code": rc, "threads": threads,
                               "command": command, "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _start(name: str, what: str, command: list[str], logs: Path, threads: int | None) -> Child:
    env = dict(os.environ)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    log = open(logs / f"{name}.log", "a", encoding="utf-8")
    log.write(f"\n$ {' '.join(command)}    # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    log.flush()
    argv = [sys.executable, "-m", "sagan", *command[1:]]  # the same 'sagan' as this process
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               start_new_session=True,
                               preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    return Child(name, what, command, process, log=log)


PHASES = frozenset({"train", "resume", "evaluate"})


def run_study(spec: StudySpec, jobs: int = 1, progress: bool = True, say: Callable[[str], None] = print,
              phases: frozenset[str] = PHASES, on_done: Callable[[str], None] | None = None) -> list[str]:
    """Bring every run of ``spec`` to trained-and-evaluated (only the steps in ``phases``: ``collect``
    evaluates, and trains nothing); returns the names of runs that failed. ``on_done(name)`` is called
    after each run that this call brings to done (``sagan study`` rewrites the results then)."""
    logs = Path(spec.out) / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    pending = [(a, s) for a, s in spec.runs()]
    def nothing_to_do(arm: Arm, seed: int) -> bool:
        step = next_command(spec, arm, seed)
        return step is None or step[0] not in phases

    done_before = [spec.run_name(a, s) for a, s in pending if nothing_to_do(a, s)]
    if done_before and phases == PHASES:
        say(f"{len(done_before)} of {len(pending)} runs are trained and evaluated already: skipped")
    queue = [(a, s) for a, s in pending if spec.run_name(a, s) not in done_before]
    bar = tqdm(total=len(pending), initial=len(done_before), disable=not progress, unit="run", desc="study",
               dynamic_ncols=True)
    running: dict[str, tuple[Child, Arm, int]] = {}
    failed: list[str] = []
    stop = StopRequest(announce=False, on_stop=lambda: [c.process.send_signal(signal.SIGTERM)
                                                        for c, _, _ in running.values()]).install()
    write = tqdm.write if progress else say
    try:
        while queue or running:
            while queue and len(running) < jobs and not stop.requested:
                arm, seed = queue.pop(0)
                name = spec.run_name(arm, seed)
                if nothing_to_do(arm, seed):
                    bar.update(1)
                    continue
                what, command = next_command(spec, arm, seed)  # type: ignore[misc]
                note = {"resume": f" from step {run_state(spec, arm, seed)[1]}"}.get(what, "")
                write(f"{name}: {what}{note} (log: {logs / (name + '.log')})")
                running[name] = (_start(name, what, command, logs, threads), arm, seed)
            if not running:
                break
            time.sleep(0.2)
            for name, (child, arm, seed) in list(running.items()):
                rc = child.process.poll()
                if rc is None:
                    continue
                seconds = time.time() - child.started
                child.log.close()
                del running[name]
                _record_segment(logs, name, child.what, child.command, seconds, rc, threads)
                if stop.requested:
                    continue
                if rc != 0:
                    failed.append(name)
                    write(f"{name}: {child.what} failed (exit code {rc}) after {seconds / 60:.1f} min; "
                          f"see {logs / (name + '.log')}")
                    bar.update(1)
                    continue
                write(f"{name}: {child.what} done in {seconds / 60:.1f} min")
                if nothing_to_do(arm, seed):
                    bar.update(1)
                    if on_done is not None and next_command(spec, arm, seed) is None:
                        on_done(name)
                else:
                    queue.insert(0, (arm, seed))  # evaluation next, before other runs start
        if stop.requested:
            raise StudyInterrupted(stop.signum or signal.SIGTERM, spec.out)
    finally:
        if running:  # an abort (second signal) or an error here: the children must not train on unowned
            for child, _, _ in running.values():
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            for child, _, _ in running.values():
                try:
                    child.process.wait(timeout=600)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                child.log.close()
        stop.restore()
        bar.close()
    return failed

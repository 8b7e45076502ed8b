"""One writer per run folder (issue 27): ``sagan train`` holds an advisory lock on RUN/.lock.

Before the lock, two ``sagan train --resume RUN`` at once both exited 0 and metrics.csv got every
row twice. Now the second is refused in one line naming the holder (exit 2) before it reads data
or touches the folder; the lock dies with its process (SIGKILL leaves no stale lock); readers
(sample, report, evaluate) never take it.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN_ARGS, start_paused_at_step

from sagan.cli import main
from sagan.runs.folder import LOCK_NAME, RunLockedError, acquire_run_lock

HOLD = r"""
import sys, time
from sagan.runs.folder import acquire_run_lock
lock = acquire_run_lock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def hold_lock(run: Path) -> subprocess.Popen:
    """A child process that holds ``run``'s lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def snapshot(run: Path) -> dict[str, str]:
    """Every file of the run folder but the lock, by content digest."""
    return {str(p.relative_to(run)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def one_error_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def metrics_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(float(row["step"])) for row in csv.DictReader(f)]


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_a_second_writer_is_refused_while_a_real_run_trains(run, tmp_path, capsys, monkeypatch):
    """A real `sagan train --resume RUN` paused mid-run holds the lock: a second resume is refused in
    one line naming it, before any data is read, and nothing in the folder changes; sampling works
    meanwhile. Once the first is SIGKILLed, the run resumes and logs every step once."""
    cmd = [sys.executable, "-m", "sagan", "train", "--resume", str(run), "--steps", "100000",
           "--set", "train.ckpt_every=100000", "--set", "train.sample_every=100000", "--no-progress"]
    proc, err_path = start_paused_at_step(cmd, 5, _env(), tmp_path)
    try:
        before = snapshot(run)

        def no_data(*a, **k):
            raise AssertionError("the refused writer loaded the data")
        with monkeypatch.context() as m:
            m.setattr("sagan.commands.train.load_data", no_data)
            assert main(["train", "--resume", str(run), "--steps", "8", "--no-progress"]) == 2
        out, err = capsys.readouterr()
        line = one_error_line(err)
        assert not out
        assert f"run folder {run} is being written by another sagan train (process {proc.pid} on " \
               f"{socket.gethostname()}, since " in line, line
        assert snapshot(run) == before  # metrics.csv, checkpoints, config and version untouched

        # Readers do not take the lock.
        assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "samples"), "--no-progress",
                     "--device", "cpu"]) == 0
        capsys.readouterr()
        assert snapshot(run) == before
    finally:
        kill(proc)
    assert "Traceback" not in err_path.read_text(errors="replace")

    # The kernel released the killed process's lock: the run resumes (from its step-4 checkpoint).
    assert main(["train", "--resume", str(run), "--steps", "8", "--no-progress"]) == 0
    capsys.readouterr()
    steps = metrics_steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == 8, steps  # each step logged once
    acquire_run_lock(run).release()  # and the finished command let go of it


def test_the_lock_dies_with_its_process(run, capsys):
    holder = hold_lock(run)
    try:
        with pytest.raises(RunLockedError, match=f"process {holder.pid} on {socket.gethostname()}, since "):
            acquire_run_lock(run)
    finally:
        kill(holder)
    with acquire_run_lock(run) as lock:  # no stale lock after SIGKILL
        assert lock.held and f'"pid": {os.getpid()}' in (run / LOCK_NAME).read_text()
        with pytest.raises(RunLockedError):  # one writer, in one process too
            acquire_run_lock(run)
    assert not lock.held
    acquire_run_lock(run).release()


def test_a_restarted_writer_waits_for_the_killed_one(run):
    """After an elastic restart rank 0 waits (up to a limit) for the old group's lock to go."""
    holder = hold_lock(run)
    try:
        t0 = time.monotonic()
        with pytest.raises(RunLockedError):
            acquire_run_lock(run, wait=0.5)
        assert time.monotonic() - t0 >= 0.5
        killer = subprocess.Popen([sys.executable, "-c", f"import os, time, signal; time.sleep(1); "
                                                        f"os.kill({holder.pid}, signal.SIGKILL)"])
        with acquire_run_lock(run, wait=60) as lock:
            assert lock.held
        killer.wait(timeout=60)
    finally:
        kill(holder)


def test_a_refused_init_from_leaves_no_run_folder(tiny_run, tiny_folder, tmp_path, capsys):
    """Weights that do not fit are found after the run folder is made; the folder goes again."""
    state = torch.load(tiny_run / "checkpoints" / "ckpt_00000004.pt", weights_only=True)
    key = "linear.bias"
    state["G"][key] = torch.zeros(3)
    state["G_ema"][key] = torch.zeros(3)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    out = tmp_path / "runs"
    assert main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "2", "--out", str(out),
                 "--init-from", str(bad)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "does not fit this run's model" in line and key in line
    assert not out.exists() or not any(out.iterdir())

"""SIGTERM/SIGINT: finish the step, write a checkpoint, exit 128+signum; a second signal aborts at once."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN_ARGS, signal_and_wait, start_paused_at_step

from sagan import signals as signals_module
from sagan.cli import main
from sagan.errors import EXIT_ABORTED, TrainingAborted, exit_code_for_signal
from sagan.runs.checkpoints import Checkpoints, load_checkpoint
from sagan.signals import StopRequest
from sagan.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

# signal.raise_signal() sends the signal to this very thread, and Python runs its handler before
# raise_signal returns (an exception it raises comes out of raise_signal): no waiting for delivery.
# os.kill(os.getpid(), ...) may be taken by another thread of this multi-threaded process instead.


class FakeClock:
    """Stands in for the ``time`` module of sagan.signals: ``monotonic()`` is ``now``."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def test_stop_request_first_signal_flags_second_aborts():
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopRequest(announce=False).install()
    try:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(TrainingAborted) as info:
            signal.raise_signal(signal.SIGINT)
        assert info.value.exit_code == EXIT_ABORTED
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is previous
    assert exit_code_for_signal(signal.SIGTERM) == 143 and exit_code_for_signal(signal.SIGINT) == 130


def test_same_signal_twice_within_the_duplicate_window_is_one_request(monkeypatch):
    """Under torchrun, SLURM's SIGTERM and the agent's forwarded copy arrive milliseconds apart."""
    clock = FakeClock()
    monkeypatch.setattr(signals_module, "time", clock)
    stop = StopRequest(announce=False, duplicate_window=5.0).install()
    try:
        signal.raise_signal(signal.SIGTERM)
        clock.now += 4.9
        signal.raise_signal(signal.SIGTERM)  # the duplicate, within the window: ignored
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(TrainingAborted):  # another signal still aborts
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.restore()
    stop = StopRequest(announce=False, duplicate_window=0.05).install()
    try:
        signal.raise_signal(signal.SIGTERM)
        clock.now += 0.2  # past the window: the same signal again is a second request
        with pytest.raises(TrainingAborted):
            signal.raise_signal(signal.SIGTERM)
    finally:
        stop.restore()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_writes_checkpoint_and_exit_code(tmp_path, tiny_folder, monkeypatch, capsys, sig):
    real_step = Trainer.train_step

    def step_then_signal(self):
        stats = real_step(self)
        if self.step == 3:  # arrives in the middle of step 3 (checkpoints are every 2 steps)
            signal.raise_signal(sig)
        return stats

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    before = signal.getsignal(sig)  # SIG_IGN for SIGINT when the tests run as a background job
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "20", "--out", str(tmp_path),
               "--name", "r", "--set", "train.sample_every=100"])
    err = capsys.readouterr().err
    assert rc == 128 + sig
    assert f"stopped by {signal.Signals(sig).name} at step 3" in err and "--resume" in err
    ckpts = Checkpoints(tmp_path / "r" / "checkpoints").list()
    assert ckpts[-1].name == "ckpt_00000003.pt"  # written at the signal, not only at ckpt_every
    assert load_checkpoint(ckpts[-1])["step"] == 3
    assert signal.getsignal(sig) == before  # the handler the run found is back


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _train_cmd(tiny_folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sagan", "train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder),
            "--steps", "100000", "--out", str(out), "--name", "r", "--set", "train.log_every=1",
            "--set", "train.ckpt_every=100000", "--set", "train.sample_every=100000", *extra]


def _start(tiny_folder: Path, out: Path, *extra: str, new_session: bool = False) -> tuple[subprocess.Popen, Path]:
    """Start training and return once two steps are logged (the signal may then come at any moment)."""
    cmd = _train_cmd(tiny_folder, out, *extra)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)
    run = out / "r"
    deadline = time.monotonic() + 240
    while True:  # wait until two steps are logged
        rows = (run / "metrics.csv").read_text().splitlines() if (run / "metrics.csv").is_file() else []
        if len(rows) >= 3:
            return proc, run
        if proc.poll() is not None:
            pytest.fail(f"training ended early (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("training too slow to start")
        time.sleep(0.02)


def test_sigterm_real_process(tmp_path, tiny_folder):
    proc, run = _start(tiny_folder, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    m = re.search(r"stopped by SIGTERM at step (\d+); wrote checkpoint (\S+)", err)
    assert m, err[-2000:]
    state = load_checkpoint(Path(m.group(2).rstrip(";")))
    assert state["step"] == int(m.group(1)) >= 2
    assert all(torch.isfinite(t).all() for t in state["G"].values() if t.is_floating_point())


def test_second_signal_aborts_without_writing(tmp_path, tiny_folder):
    # The child waits before its third step until it is aborted (conftest's pause hook), so both
    # signals arrive within one step however long the two sends take on a loaded machine.
    out = tmp_path / "out"
    proc, err_path = start_paused_at_step(_train_cmd(tiny_folder, out), 2, _env(), tmp_path)
    signal_and_wait(proc, [signal.SIGTERM, signal.SIGINT])
    err = err_path.read_text(errors="replace")
    assert proc.returncode == EXIT_ABORTED, err[-2000:]
    assert "aborted by a second signal" in err and "Traceback" not in err
    ckpt_dir = out / "r" / "checkpoints"
    assert not (ckpt_dir.is_dir() and any(ckpt_dir.iterdir()))  # nothing written, no temporary left


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_process_group_with_loader_workers(tmp_path, tiny_folder, sig):
    """Ctrl-C in a terminal, or a scheduler's SIGTERM (SLURM, Kubernetes), signals every process of
    the job, DataLoader workers included. The workers ignore SIGINT; SIGTERM kills them (PyTorch's
    own handler), which must not abort the main process mid-step: it finishes the step, loading any
    batch the dead workers did not deliver itself, and checkpoints."""
    proc, run = _start(tiny_folder, tmp_path, "--set", "data.num_workers=2", new_session=True)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, err[-2000:]
    assert err.count(f"received {name}") == 1 and "Traceback" not in err, err[-2000:]
    m = re.search(rf"stopped by {name} at step (\d+); wrote checkpoint (\S+)", err)
    assert m and load_checkpoint(Path(m.group(2).rstrip(";")))["step"] == int(m.group(1)), err[-2000:]

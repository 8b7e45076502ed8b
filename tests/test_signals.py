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

from conftest import TINY_TRAIN_ARGS
from sagan.cli import main
from sagan.train.checkpoint import list_checkpoints, load_checkpoint
from sagan.train.loop import Trainer
from sagan.train.signals import EXIT_ABORTED, StopRequest, TrainingAborted, exit_code_for_signal



pytestmark = pytest.mark.usefixtures("one_thread")

def test_stop_request_first_signal_flags_second_aborts():
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopRequest(announce=False).install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the Python-level handler runs at the next bytecode boundary
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(TrainingAborted) as info:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        assert info.value.exit_code == EXIT_ABORTED
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is previous
    assert exit_code_for_signal(signal.SIGTERM) == 143 and exit_code_for_signal(signal.SIGINT) == 130


def test_same_signal_twice_within_the_duplicate_window_is_one_request():
    """Under torchrun, SLURM's SIGTERM and the agent's forwarded copy arrive milliseconds apart."""
    stop = StopRequest(announce=False, duplicate_window=5.0).install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # the duplicate: ignored
        time.sleep(0.01)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(TrainingAborted):  # another signal still aborts
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    finally:
        stop.restore()
    stop = StopRequest(announce=False, duplicate_window=0.05).install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # past the window: the same signal again is a second request
        with pytest.raises(TrainingAborted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
    finally:
        stop.restore()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_writes_checkpoint_and_exit_code(tmp_path, tiny_folder, monkeypatch, capsys, sig):
    real_step = Trainer.train_step

    def step_then_signal(self):
        stats = real_step(self)
        if self.step == 3:  # arrives in the middle of step 3 (checkpoints are every 2 steps)
            os.kill(os.getpid(), sig)
        return stats

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "20", "--out", str(tmp_path),
               "--name", "r", "--set", "train.sample_every=100"])
    err = capsys.readouterr().err
    assert rc == 128 + sig
    assert f"stopped by {signal.Signals(sig).name} at step 3" in err and "--resume" in err
    ckpts = list_checkpoints(tmp_path / "r" / "checkpoints")
    assert ckpts[-1].name == "ckpt_00000003.pt"  # written at the signal, not only at ckpt_every
    assert load_checkpoint(ckpts[-1])["step"] == 3
    assert signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL)  # handlers restored


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _start(tiny_folder: Path, out: Path, *extra: str, new_session: bool = False) -> tuple[subprocess.Popen, Path]:
    cmd = [sys.executable, "-m", "sagan", "train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder),
           "--steps", "100000", "--out", str(out), "--name", "r", "--set", "train.log_every=1",
           "--set", "train.ckpt_every=100000", "--set", "train.sample_every=100000", *extra]
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
    proc, run = _start(tiny_folder, tmp_path)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_ABORTED, err[-2000:]
    assert "aborted by a second signal" in err and "Traceback" not in err
    ckpt_dir = run / "checkpoints"
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

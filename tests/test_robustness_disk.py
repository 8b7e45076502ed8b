"""A real write failure (not a monkeypatch): the file-size limit of a running training process is
lowered below the size of a checkpoint, so the kernel refuses the write (EFBIG) exactly as a full
disk refuses it (ENOSPC). Training must stop with EXIT_CHECKPOINT_WRITE, leave the previous
checkpoint intact, and resume from it once the "disk" has room again.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest
from conftest import TINY_TRAIN_ARGS

from sagan.errors import EXIT_CHECKPOINT_WRITE
from sagan.runs.checkpoints import Checkpoints, load_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")


def test_disk_full_during_training_keeps_previous_checkpoint(tmp_path, tiny_folder):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "sagan", "train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder),
           "--steps", "100000", "--out", str(tmp_path), "--name", "r", "--set", "train.ckpt_every=3",
           "--set", "train.sample_every=100000", "--set", "train.log_every=1000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt_dir = tmp_path / "r" / "checkpoints"
    deadline = time.monotonic() + 240
    try:
        size = None
        while size is None:  # poll for the first checkpoint (later ones are the same size, give or take bytes)
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "training too slow"
            ckpts = Checkpoints(ckpt_dir).list()
            try:
                size = ckpts[-1].stat().st_size if ckpts else None
            except FileNotFoundError:  # rotated away (keep_ckpts) between the listing and the stat
                pass
            if size is None:
                time.sleep(0.01)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size // 4, size // 4))  # the disk is now "full"
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_CHECKPOINT_WRITE, err[-3000:]
    assert "could not write checkpoint" in err and "previous checkpoint is intact" in err
    assert "MiB free on that disk" in err, err[-2000:]
    ckpts = Checkpoints(ckpt_dir).list()
    assert [p.name for p in ckpt_dir.iterdir()] == [p.name for p in ckpts]  # no temporary file left
    last = load_checkpoint(ckpts[-1])
    assert last["step"] % 3 == 0 and last["step"] >= 3

    # Room again: the run resumes from the intact checkpoint.
    res = subprocess.run([sys.executable, "-m", "sagan", "train", "--resume", str(tmp_path / "r"),
                          "--steps", str(last["step"] + 1), "--no-progress"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming {tmp_path / 'r'} from step {last['step']}" in res.stdout
    assert load_checkpoint(Checkpoints(ckpt_dir).list()[-1])["step"] == last["step"] + 1

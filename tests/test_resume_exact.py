"""Exact resume: a run killed at an arbitrary step and resumed ends bit-identical to an uninterrupted one.

Everything in the final checkpoint is compared: G, D, the EMA generator, both Adam states,
spectral-norm u/v and batch-norm buffers (part of the state dicts), the data stream position,
all RNG streams (torch, the noise generator, Python, numpy), the logging accumulators, the step.
Only ``code_version`` (which records whether the checkout is dirty) is left out.
"""
from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_STANDING_SETS, signal_and_wait, start_paused_at_step

from sagan.config import load_config
from sagan.data.datasets import load_data
from sagan.runs.checkpoints import Checkpoints, load_checkpoint
from sagan.train.resolve import resolve_for_data
from sagan.train.trainer import Trainer

STEPS, CKPT_EVERY = 8, 3
TRAIN_SETS = ["data.dataset=image_folder", "model.g_ch=8", "model.d_ch=8", "train.batch_size=8",
              "train.log_every=1", "train.sample_every=4", f"train.ckpt_every={CKPT_EVERY}",
              "train.keep_ckpts=2", "train.deterministic=true", "train.device=cpu", *TINY_STANDING_SETS]


# One thread per test process is fastest overall on a shared machine. Trainer(deterministic=true)
# switches torch's global flag on; conftest's autouse fixture puts it back after every test.
pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same(a, b, where: str = "checkpoint") -> None:
    """Recursive bit-exact equality of checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            if k != "code_version":
                assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "images_per_s"} for r in csv.DictReader(f)]


# ----------------------------------------------------------------------------- in process

def _trainer(folder: Path, run_dir: Path, steps: int = STEPS, extra: tuple[str, ...] = ()) -> Trainer:
    cfg = load_config("fmnist32", overrides=[*TRAIN_SETS, f"data.root={folder}", f"train.steps={steps}", *extra])
    run_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg.data, cfg.model.resolution, cfg.model.conditional)
    return Trainer(resolve_for_data(cfg, data, torch.device("cpu"))[0], run_dir, data, progress=False)


class _Crash(Exception):
    pass


@pytest.mark.parametrize("extra", [(), ("data.diffaugment=[color,translation,cutout]", "data.hflip=true")],
                         ids=["plain", "diffaugment-hflip"])
def test_resume_between_checkpoints_is_exact_in_process(tmp_path, tiny_folder, monkeypatch, extra):
    ref = _trainer(tiny_folder, tmp_path / "ref", extra=extra)
    ref.fit()
    expected = load_checkpoint(Checkpoints(tmp_path / "ref" / "checkpoints").list()[-1])

    # A crash at step 5 (between the checkpoints at 3 and 6): metrics rows 4-5 were already logged.
    crashing = _trainer(tiny_folder, tmp_path / "run", extra=extra)
    real_step = Trainer.train_step

    def crash_after_5(self):
        if self.step == 5:
            raise _Crash()
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", crash_after_5)
    with pytest.raises(_Crash):
        crashing.fit()
    monkeypatch.undo()
    assert [p.name for p in Checkpoints(tmp_path / "run" / "checkpoints").list()] == ["ckpt_00000003.pt"]

    resumed = _trainer(tiny_folder, tmp_path / "run", extra=extra)
    assert resumed.resume() == 3
    resumed.fit()
    got = load_checkpoint(Checkpoints(tmp_path / "run" / "checkpoints").list()[-1])
    assert got["step"] == STEPS
    assert_same(expected, got)
    assert _metrics(tmp_path / "run") == _metrics(tmp_path / "ref")  # logs replayed, not duplicated


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, tiny_folder):
    ref = _trainer(tiny_folder, tmp_path / "ref")
    ref.fit()
    expected = load_checkpoint(Checkpoints(tmp_path / "ref" / "checkpoints").list()[-1])
    part = _trainer(tiny_folder, tmp_path / "run", steps=6)
    part.fit()
    ckpts = Checkpoints(tmp_path / "run" / "checkpoints").list()
    data = ckpts[-1].read_bytes()
    ckpts[-1].write_bytes(data[: len(data) // 3])  # bit rot / a copy cut short after it was written
    (ckpts[-1].parent / ".ckpt_00000006.pt.x1y2.tmp").write_bytes(b"left by a killed write")
    resumed = _trainer(tiny_folder, tmp_path / "run")
    assert resumed.resume() == 3  # fell back to the previous checkpoint
    resumed.fit()
    assert_same(expected, load_checkpoint(Checkpoints(tmp_path / "run" / "checkpoints").list()[-1]))
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))
    assert "falling back" in (tmp_path / "run" / "events.log").read_text()


def test_sample_grids_do_not_touch_training_rng(tmp_path, tiny_folder):
    tr = _trainer(tiny_folder, tmp_path / "run")
    before = (torch.get_rng_state(), tr.gan.noise.get_state(), random.getstate())
    torch.manual_seed(123)  # sampling must not reseed or consume anything either
    marker = torch.get_rng_state()
    tr.sample_grid("a.png")
    assert torch.equal(torch.get_rng_state(), marker)
    torch.set_rng_state(before[0])
    assert torch.equal(tr.gan.noise.get_state(), before[1]) and random.getstate() == before[2]


# ----------------------------------------------------------------------------- SIGKILL, real processes

def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _train_cmd(folder: Path, out: Path, name: str) -> list[str]:
    args = [sys.executable, "-m", "sagan", "train", "--preset", "fmnist32", "--data", str(folder),
            "--steps", str(STEPS), "--out", str(out), "--name", name, "--no-progress"]
    for s in TRAIN_SETS:
        args += ["--set", s]
    return args


def _logged_step(run: Path) -> int:
    try:
        rows = (run / "metrics.csv").read_text().splitlines()[1:]
        return int(float(rows[-1].split(",")[0])) if rows else 0
    except (OSError, ValueError, IndexError):
        return 0


def _run_and_kill(cmd: list[str], run: Path, kill_at: int, timeout: float = 240) -> int:
    """Start training; SIGKILL it once step ``kill_at`` is done (logged, and checkpointed when due)
    and step ``kill_at + 1`` is about to begin: the child waits there (conftest's pause hook) until
    killed, so the kill point is exact however loaded the machine is. Returns the logged step."""
    proc, err = start_paused_at_step(cmd, kill_at, _env(), run.parent / f"{run.name}_proc", timeout=timeout)
    signal_and_wait(proc, [signal.SIGKILL], timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.read_text(errors="replace")[-2000:]
    assert _logged_step(run) == kill_at
    return kill_at


def _resume(run: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "sagan", "train", "--resume", str(run), "--no-progress"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_folder) -> Path:
    out = tmp_path_factory.mktemp("ref")
    res = subprocess.run(_train_cmd(tiny_folder, out, "ref"), env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "ref"


def _kill_resume_matches(reference_run: Path, folder: Path, out: Path, kill_at: int) -> None:
    run = out / f"killed_at_{kill_at}"
    logged = _run_and_kill(_train_cmd(folder, out, run.name), run, kill_at)
    _resume(run)
    final = Checkpoints(run / "checkpoints").list()[-1]
    assert final.name == f"ckpt_{STEPS:08d}.pt", f"killed after step {logged}"
    expected, got = load_checkpoint(Checkpoints(reference_run / "checkpoints").list()[-1]), load_checkpoint(final)
    assert (expected["config"].pop("name"), got["config"].pop("name")) == ("ref", run.name)  # the only difference
    assert_same(expected, got, f"run killed after step {logged}")
    assert _metrics(run) == _metrics(reference_run)


# Kill points drawn at random once (seeded, so a failure can be reproduced), covering a kill
# before the first checkpoint, between checkpoints and after the last one. Each kill lands right
# after its step (see _run_and_kill), so a failure reproduces exactly.
KILL_POINTS = sorted(random.Random(6).sample(range(1, STEPS), 3))


# The default run kills at the middle one of the three points; CI also runs the other two (-m heavy).
@pytest.mark.parametrize("kill_at", [k if k == KILL_POINTS[1] else pytest.param(k, marks=pytest.mark.heavy)
                                     for k in KILL_POINTS])
def test_sigkill_and_resume_is_bit_identical(reference_run, tiny_folder, tmp_path, kill_at):
    _kill_resume_matches(reference_run, tiny_folder, tmp_path, kill_at)


@pytest.mark.slow  # every kill point 1..STEPS-1 in real processes: ~2x the time of the default set
@pytest.mark.parametrize("kill_at", [k for k in range(1, STEPS) if k not in KILL_POINTS])
def test_sigkill_and_resume_every_step(reference_run, tiny_folder, tmp_path, kill_at):
    _kill_resume_matches(reference_run, tiny_folder, tmp_path, kill_at)

"""Divergence guard (injected NaN: rollback and stop) and the collapse detector."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import TINY_TRAIN_ARGS

import sagan.train.step as step_mod
from sagan.cli import main
from sagan.errors import EXIT_DIVERGED
from sagan.runs.checkpoints import Checkpoints, load_checkpoint
from sagan.train.guard import CollapseDetector
from sagan.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _inject_nan_loss(monkeypatch, at_steps: set[int]) -> dict:
    """Make the D loss NaN during the given (1-based) steps; NaN gradients then poison D's weights."""
    seen = {"calls": 0, "injected": 0}
    real_objective = step_mod.objective  # the training step resolves its loss with it, once

    def objective(name):
        real = real_objective(name)

        def d_loss(real_s, fake_s):
            seen["calls"] += 1
            loss = real.d_loss(real_s, fake_s)
            if seen["calls"] in at_steps:
                seen["injected"] += 1
                # NaN flows back through every score (a hinge term alone can be saturated: zero gradient)
                return (loss + real_s.mean() + fake_s.mean()) * float("nan")
            return loss

        return dataclasses.replace(real, d_loss=d_loss)

    monkeypatch.setattr(step_mod, "objective", objective)
    return seen


def _train(tmp_path, folder, *extra, steps=8, name="r"):
    return main(["train", *TINY_TRAIN_ARGS, "--data", str(folder), "--steps", str(steps), "--out", str(tmp_path),
                 "--name", name, "--set", "train.sample_every=100", *extra])


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for k in ("G", "D", "G_ema") for t in state[k].values() if t.is_floating_point())


def test_nan_rolls_back_lowers_lr_and_finishes(tmp_path, tiny_folder, monkeypatch, capsys):
    seen = _inject_nan_loss(monkeypatch, {5})  # step 5; the newest checkpoint is step 4
    rc = _train(tmp_path, tiny_folder, "--set", "train.on_divergence=rollback", "--set", "train.rollback_lr_factor=0.5")
    assert rc == 0 and seen["injected"] == 1
    final = load_checkpoint(Checkpoints(tmp_path / "r" / "checkpoints").list()[-1])
    assert final["step"] == 8 and _all_finite(final)
    assert final["guard"]["rollbacks"] == 1
    assert final["opt_g"]["param_groups"][0]["lr"] == pytest.approx(0.5e-4)
    assert final["opt_d"]["param_groups"][0]["lr"] == pytest.approx(2e-4)
    events = (tmp_path / "r" / "events.log").read_text()
    assert "divergence at step 5" in events and "Rolled back to step 4" in events
    assert "loss_d=nan (discriminator loss)" in events and "non-finite weights in D" in events
    assert "lr_g 0.0001 -> 5e-05" in events
    steps = [int(float(line.split(",")[0])) for line in (tmp_path / "r" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps))  # the rolled-back steps are logged once, not twice
    assert "Rolled back" in capsys.readouterr().err


def test_rollback_rewinds_csv_and_tensorboard(tmp_path, tiny_folder, monkeypatch):
    """Steps 5 and 6 are logged, step 7 diverges, the run rolls back to the checkpoint of step 4 and
    replays 5..8: both metrics.csv and the TensorBoard events hold every step once (the same
    restore path as resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _inject_nan_loss(monkeypatch, {7})
    rc = _train(tmp_path, tiny_folder, "--set", "train.ckpt_every=4", "--set", "train.log_every=1")
    assert rc == 0
    assert "Rolled back to step 4" in (tmp_path / "r" / "events.log").read_text()
    steps = [int(float(line.split(",")[0])) for line in (tmp_path / "r" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 9))
    acc = EventAccumulator(str(tmp_path / "r" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss_d")] == list(range(1, 9))


def test_nan_before_any_checkpoint_rolls_back_to_the_start(tmp_path, tiny_folder, monkeypatch):
    _inject_nan_loss(monkeypatch, {1})
    rc = _train(tmp_path, tiny_folder, "--set", "train.ckpt_every=100", steps=3)
    assert rc == 0
    final = load_checkpoint(Checkpoints(tmp_path / "r" / "checkpoints").list()[-1])
    assert final["step"] == 3 and _all_finite(final) and final["guard"]["rollbacks"] == 1
    assert "the initial state" in (tmp_path / "r" / "events.log").read_text()


def test_nan_stop_mode_exits_with_message(tmp_path, tiny_folder, monkeypatch, capsys):
    _inject_nan_loss(monkeypatch, {5})
    rc = _train(tmp_path, tiny_folder, "--set", "train.on_divergence=stop")
    err = capsys.readouterr().err
    assert rc == EXIT_DIVERGED
    assert "training diverged at step 5" in err and "loss_d=nan (discriminator loss)" in err
    assert "non-finite weights in D" in err and "ckpt_00000004.pt" in err and "Traceback" not in err
    ckpts = Checkpoints(tmp_path / "r" / "checkpoints").list()
    assert ckpts[-1].name == "ckpt_00000004.pt"  # nothing after the blow-up was saved
    assert _all_finite(load_checkpoint(ckpts[-1]))


def test_nonfinite_weight_with_finite_losses_is_named(tmp_path, tiny_folder, monkeypatch, capsys):
    real_step = Trainer.train_step

    def poison_g(self):
        stats = real_step(self)
        if self.step == 3:
            with torch.no_grad():
                self.gan.G.blocks[0][0].conv1.parametrizations.weight.original.fill_(float("inf"))
        return stats

    monkeypatch.setattr(Trainer, "train_step", poison_g)
    rc = _train(tmp_path, tiny_folder, "--set", "train.on_divergence=stop")
    err = capsys.readouterr().err
    assert rc == EXIT_DIVERGED
    assert "non-finite weights in G (1 tensors): G.blocks.0.0.conv1.parametrizations.weight.original" in err
    assert "(discriminator loss)" not in err and "(generator loss)" not in err  # the losses were still finite


def test_repeated_divergence_stops_after_max_rollbacks(tmp_path, tiny_folder, monkeypatch, capsys):
    _inject_nan_loss(monkeypatch, set(range(3, 1000)))  # every step from 3 on blows up
    rc = _train(tmp_path, tiny_folder, "--set", "train.max_rollbacks=2")
    err = capsys.readouterr().err
    assert rc == EXIT_DIVERGED
    assert "again after 2 rollbacks (train.max_rollbacks=2)" in err
    events = (tmp_path / "r" / "events.log").read_text()
    assert events.count("Rolled back") == 2
    assert "lr_g 5e-05 -> 2.5e-05" in events  # learning rates lowered once more per rollback
    assert _all_finite(load_checkpoint(Checkpoints(tmp_path / "r" / "checkpoints").list()[-1]))


def test_collapse_detector():
    det = CollapseDetector(window=40, d_threshold=0.05)
    warnings = [det.update(s, 0.01, 0.5 + 0.05 * s) for s in range(1, 41)]  # D ~ 0, G rising
    assert warnings[:-1] == [None] * 39 and "possible mode collapse at step 40" in warnings[-1]
    assert all(det.update(s, 0.01, 0.5 + 0.05 * s) is None for s in range(41, 60))  # once per window

    flat = CollapseDetector(window=40, d_threshold=0.05)
    assert all(flat.update(s, 0.01, 1.0) is None for s in range(1, 200))  # D wins but G is not rising
    healthy = CollapseDetector(window=40, d_threshold=0.05)
    assert all(healthy.update(s, 1.2, 0.5 + 0.05 * s) is None for s in range(1, 200))
    wgan = CollapseDetector(window=40, d_threshold=0.05, loss_name="wasserstein")
    assert all(wgan.update(s, 0.0, 0.5 + 0.05 * s) is None for s in range(1, 200))
    off = CollapseDetector(window=0, d_threshold=0.05)
    assert off.update(1, 0.0, math.inf) is None


def test_collapse_warning_reaches_the_log(tmp_path, tiny_folder, monkeypatch):
    real_step = Trainer.train_step

    def collapsing(self):
        stats = real_step(self)
        stats.loss_d, stats.loss_g = 0.001, float(self.step)  # finite: only the detector reacts
        return stats

    monkeypatch.setattr(Trainer, "train_step", collapsing)
    assert _train(tmp_path, tiny_folder, "--set", "train.collapse_window=4", steps=5) == 0
    assert "possible mode collapse at step 4" in (tmp_path / "r" / "events.log").read_text()

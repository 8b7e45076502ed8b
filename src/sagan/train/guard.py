"""Divergence guard and collapse detector.

After every training step the guard checks the step's losses and every parameter and float
buffer of G and D (spectral-norm vectors, batch-norm statistics) for NaN/Inf. On a hit it either
stops the run (``train.on_divergence=stop``) with a message naming the loss and the tensors that
blew up, or rolls back to the newest loadable checkpoint (``rollback``), multiplying both learning
rates by ``train.rollback_lr_factor`` for every rollback since that checkpoint, at most
``train.max_rollbacks`` times. Checkpoints are only written after a clean check, so every
checkpoint on disk is a good one.

The collapse detector watches for the classic failure signature (D loss stuck near 0 while the
G loss keeps rising) and warns in the log; it never changes training.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from sagan.errors import TrainingDiverged, plural
from sagan.runs.folder import RunDir
from sagan.train.step import StepStats

log = logging.getLogger(__name__)

LOSS_LABELS = {"loss_d": "discriminator loss", "loss_g": "generator loss",
               "d_real": "D score on real images", "d_fake": "D score on generated images"}


def log_event(run_dir: Path | None, message: str, echo: bool = True) -> None:
    """Append a timestamped line to ``RUN_DIR/events.log`` (and echo it to stderr)."""
    if echo:
        log.warning(message)
    if run_dir is None:
        return
    try:
        with open(RunDir(run_dir).events, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
    except OSError:
        pass


def nonfinite_tensors(module: nn.Module, prefix: str) -> list[str]:
    """Names of the parameters and floating-point buffers of ``module`` holding NaN or Inf."""
    named = [(n, t) for n, t in module.named_parameters() if t.numel()]
    named += [(n, t) for n, t in module.named_buffers() if t.is_floating_point() and t.numel()]
    if not named:
        return []
    tensors = [t.detach() for _, t in named]
    try:  # one fused kernel per dtype/device group; max-abs norm cannot overflow
        norms = torch._foreach_norm(tensors, math.inf)
    except (RuntimeError, AttributeError, TypeError):  # pragma: no cover - older/exotic backends
        norms = [t.abs().max() for t in tensors]
    ok = torch.isfinite(torch.stack([n.float().cpu() for n in norms]))
    if bool(ok.all()):
        return []
    return [f"{prefix}.{n}" for (n, _), good in zip(named, ok.tolist()) if not good]


def describe_problem(stats: StepStats, modules: dict[str, nn.Module]) -> str | None:
    """A sentence naming the non-finite losses and tensors, or None when all is finite."""
    bad_losses = [f"{k}={getattr(stats, k)} ({LOSS_LABELS[k]})" for k in LOSS_LABELS
                  if not math.isfinite(getattr(stats, k))]
    parts = []
    if bad_losses:
        parts.append("non-finite " + ", ".join(bad_losses))
    for prefix, module in modules.items():
        bad = nonfinite_tensors(module, prefix)
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            parts.append(f"non-finite weights in {prefix} ({len(bad)} tensors): {', '.join(bad[:5])}{more}")
    return "; ".join(parts) if parts else None


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (a no-op outside distributed runs)."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


class CollapseDetector:
    """Warns when, over ``window`` steps, mean |D loss| < ``d_threshold`` and the G loss rises."""

    def __init__(self, window: int, d_threshold: float, loss_name: str = "hinge"):
        self.window, self.d_threshold = window, d_threshold
        self.enabled = window > 0 and loss_name != "wasserstein"  # a WGAN critic's loss has no "near 0"
        self.history: deque[tuple[float, float]] = deque(maxlen=max(window, 1))

    def reset(self) -> None:
        self.history.clear()

    def update(self, step: int, loss_d: float, loss_g: float) -> str | None:
        if not self.enabled:
            return None
        self.history.append((loss_d, loss_g))
        if len(self.history) < self.window:
            return None
        d = [abs(a) for a, _ in self.history]
        g = [b for _, b in self.history]
        q = max(1, self.window // 4)
        d_mean = sum(d) / len(d)
        g_first, g_last = sum(g[:q]) / q, sum(g[-q:]) / q
        rising = g_last > g_first + max(0.1, 0.1 * abs(g_first))
        if d_mean < self.d_threshold and rising:
            self.history.clear()  # at most one warning per window
            return (f"possible mode collapse at step {step}: mean |D loss| {d_mean:.4f} < {self.d_threshold} over "
                    f"the last {self.window} steps while the G loss rose from {g_first:.3f} to {g_last:.3f}; "
                    "D is winning outright. Look at the samples; consider lowering optim.lr_d, "
                    "or rolling back to an earlier checkpoint")
        return None


@dataclass
class RollbackPlan:
    """What the run must change after restoring the last good state."""
    total: int  # rollbacks so far, this one included
    lr_scale: float  # multiply both learning rates by this
    reseed_noise: bool  # draw a different noise stream (the learning rates did not change)


class DivergenceGuard:
    """Decides what a step with non-finite values means: stop (``TrainingDiverged``) or roll back.

    The run acts on the decision (:meth:`sagan.train.trainer.Trainer._check_step`): it restores the
    last good state and applies the :class:`RollbackPlan`. The guard's own state (the rollback
    count) is saved in checkpoints, so a resumed run knows how many rollbacks happened.
    """

    def __init__(self, train_cfg: Any, loss_name: str = "hinge"):
        t = train_cfg
        self.mode, self.factor, self.max_rollbacks = t.on_divergence, t.rollback_lr_factor, t.max_rollbacks
        self.rollbacks = 0  # in this run, including those before the checkpoint we resumed from
        self.collapse = CollapseDetector(t.collapse_window, t.collapse_d_loss, loss_name)

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.rollbacks = int((state or {}).get("rollbacks", 0))

    def collapse_warning(self, step: int, loss_d: float, loss_g: float) -> str | None:
        return self.collapse.update(step, loss_d, loss_g)

    def decide(self, problem: str, step: int, last_checkpoint_note: str) -> None:
        """Return when the run should roll back; raise ``TrainingDiverged`` when it must stop."""
        where = f"at step {step}"
        if self.mode == "stop":
            raise TrainingDiverged(self.stop_message(f"training diverged {where}: {problem}", last_checkpoint_note), step)
        if self.rollbacks >= self.max_rollbacks:
            raise TrainingDiverged(self.stop_message(
                f"training diverged {where} again after {plural(self.rollbacks, 'rollback')} "
                f"(train.max_rollbacks={self.max_rollbacks}): {problem}", last_checkpoint_note), step)

    def plan_rollback(self, rollbacks_before: int) -> RollbackPlan:
        """After the state was restored (``self.rollbacks`` is now the checkpoint's count)."""
        ckpt_rollbacks = self.rollbacks
        total = max(rollbacks_before, ckpt_rollbacks) + 1
        self.rollbacks = total
        self.collapse.reset()
        # The checkpoint's learning rates already include its own rollbacks; lower them for the rest.
        # Same weights, data and noise would replay the same blow-up: without an LR change, new noise.
        return RollbackPlan(total, self.factor ** (total - ckpt_rollbacks), self.factor == 1.0)

    @staticmethod
    def stop_message(text: str, last_checkpoint_note: str) -> str:
        return (f"{text}.\nStopped; {last_checkpoint_note} (nothing after it was saved). Lower optim.lr_g/optim.lr_d, "
                "or use train.on_divergence=rollback, then resume with sagan train --resume RUN_DIR")

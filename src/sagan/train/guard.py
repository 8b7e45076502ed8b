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

import copy
import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sagan.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from sagan.train.loop import StepStats, Trainer

LOSS_LABELS = {"loss_d": "discriminator loss", "loss_g": "generator loss",
               "d_real": "D score on real images", "d_fake": "D score on generated images"}


class TrainingDiverged(RuntimeError):
    """Training produced non-finite values and the guard stopped it."""

    def __init__(self, message: str, step: int):
        self.step = step
        super().__init__(message)


def log_event(run_dir: Path | None, message: str, echo: bool = True) -> None:
    """Append a timestamped line to ``RUN_DIR/events.log`` (and echo it to stderr)."""
    if echo:
        try:
            from tqdm import tqdm
            tqdm.write(message, file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break training
            print(message, file=sys.stderr)
    if run_dir is None:
        return
    try:
        with open(Path(run_dir) / "events.log", "a", encoding="utf-8") as f:
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


def describe_problem(stats: "StepStats", modules: dict[str, nn.Module]) -> str | None:
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


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (a no-op outside distributed runs)."""
    import torch.distributed as tdist
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


class DivergenceGuard:
    """Checks each step for non-finite values; rolls back or stops as configured."""

    def __init__(self, trainer: "Trainer"):
        t = trainer.cfg.train
        self.trainer = trainer
        self.mode, self.factor, self.max_rollbacks = t.on_divergence, t.rollback_lr_factor, t.max_rollbacks
        self.rollbacks = 0  # in this run, including those before the checkpoint we resumed from
        self.collapse = CollapseDetector(t.collapse_window, t.collapse_d_loss, trainer.cfg.loss.name)
        self._initial_state: dict[str, Any] | None = None

    # -- state saved in checkpoints (so a resumed run knows how many rollbacks happened)
    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.rollbacks = int((state or {}).get("rollbacks", 0))

    def begin(self) -> None:
        """Called when training starts: without a checkpoint, keep the initial state to roll back to."""
        tr = self.trainer
        if self.mode == "rollback" and not list_checkpoints(tr.run_dir / "checkpoints"):
            self._initial_state = copy.deepcopy(tr.state_dict())
            self._initial_state["step"] = tr.step

    def after_step(self, stats: "StepStats") -> bool:
        """Check the step just taken. Returns True when it rolled back; raises ``TrainingDiverged`` to stop."""
        tr = self.trainer
        problem = describe_problem(stats, {"G": tr.G, "D": tr.D})
        if not _any_rank(problem is not None, tr.device):
            if tr.is_main:
                warning = self.collapse.update(tr.step, stats.loss_d, stats.loss_g)
                if warning:
                    log_event(tr.run_dir, f"warning: {warning}")
            return False
        problem = problem or "another process reported non-finite values"
        where = f"at step {tr.step}"
        if self.mode == "stop":
            raise TrainingDiverged(self._stop_message(f"training diverged {where}: {problem}"), tr.step)
        if self.rollbacks >= self.max_rollbacks:
            raise TrainingDiverged(self._stop_message(
                f"training diverged {where} again after {self.rollbacks} rollback(s) "
                f"(train.max_rollbacks={self.max_rollbacks}): {problem}"), tr.step)
        self.rollback(problem)
        return True

    def _stop_message(self, text: str) -> str:
        ckpts = list_checkpoints(self.trainer.run_dir / "checkpoints")
        last = f"the last good checkpoint is {ckpts[-1]}" if ckpts else "no checkpoint was written yet"
        return (f"{text}.\nStopped; {last} (nothing after it was saved). Lower optim.lr_g/optim.lr_d, or use "
                "train.on_divergence=rollback, then resume with sagan train --resume RUN_DIR")

    def _last_good_state(self) -> tuple[dict[str, Any], str]:
        tr = self.trainer
        for path in reversed(list_checkpoints(tr.run_dir / "checkpoints")):
            try:
                return load_checkpoint(path, map_location=tr.device), str(path)
            except CheckpointError as e:
                log_event(tr.run_dir if tr.is_main else None, f"warning: skipping unreadable checkpoint: {e}")
        if self._initial_state is not None:
            return copy.deepcopy(self._initial_state), "the initial state (no checkpoint yet)"
        raise TrainingDiverged(self._stop_message(
            f"training diverged at step {tr.step} and there is no checkpoint to roll back to"), tr.step)

    def rollback(self, problem: str) -> None:
        tr = self.trainer
        from_step, before = tr.step, self.rollbacks
        lr_before = {"lr_g": tr.opt_g.param_groups[0]["lr"], "lr_d": tr.opt_d.param_groups[0]["lr"]}
        state, source = self._last_good_state()
        tr.load_state_dict(state)  # sets self.rollbacks to the checkpoint's count
        ckpt_rollbacks = self.rollbacks
        total = max(before, ckpt_rollbacks) + 1
        self.rollbacks = total
        # The checkpoint's learning rates already include its own rollbacks; lower them for the rest.
        scale = self.factor ** (total - ckpt_rollbacks)
        changes = []
        for name, opt in (("lr_g", tr.opt_g), ("lr_d", tr.opt_d)):
            for group in opt.param_groups:
                group["lr"] = group["lr"] * scale
            changes.append(f"{name} {lr_before[name]:.3g} -> {opt.param_groups[0]['lr']:.3g}")
        if self.factor == 1.0:
            # Same weights, data and noise would replay the same blow-up; draw different noise.
            tr.noise.manual_seed(tr.cfg.train.seed * 7919 + 17 + 1_000_003 * total)
        self.collapse.reset()
        if tr.logger is not None:
            tr.logger.truncate_after(tr.step)
        log_event(tr.run_dir if tr.is_main else None,
                  f"divergence at step {from_step}: {problem}. Rolled back to step {tr.step} ({source}); "
                  f"rollback {total} of at most {self.max_rollbacks}; {', '.join(changes)}")

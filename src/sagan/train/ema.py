"""Exponential moving average of the generator's weights."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a copy of the model whose parameters track an EMA of the model's.

    Buffers (BN running statistics, spectral-norm u/v vectors) are copied, not averaged.
    Before ``start`` steps the shadow simply copies the model. With ``warmup`` the decay ramps
    up as ``min(decay, (1 + n) / (10 + n))``, n steps after ``start`` (the schedule of
    TensorFlow's ExponentialMovingAverage with num_updates): early in training, when the weights
    move fast, a fixed 0.999 would average the initial weights into the samples for thousands
    of steps. The schedule is a function of the step only, so resuming is exact.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, start: int = 0, warmup: bool = True):
        self.decay, self.start, self.warmup = decay, start, warmup
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        if step < self.start:
            return 0.0
        if not self.warmup:
            return self.decay
        n = step - self.start
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = self.decay_at(step)
        src = dict(model.named_parameters())
        for name, p in self.shadow.named_parameters():
            p.lerp_(src[name].detach(), 1.0 - decay)
        src_b = dict(model.named_buffers())
        for name, b in self.shadow.named_buffers():
            b.copy_(src_b[name])

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)

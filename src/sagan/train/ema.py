"""Exponential moving average of the generator's weights."""
from __future__ import annotations

import copy

import torch
from torch import nn

from sagan.models.standing import STANDING_BATCH_SIZE, STANDING_BATCHES, STANDING_SEED, standing_statistics
from sagan.nn.spectral import spectral_parametrizations


class EMA:
    """Keeps ``shadow``, a copy of the model whose parameters track an EMA of the model's.

    EMA of the weights is not in the SAGAN paper (the authors' code has none); BigGAN-PyTorch
    keeps one, with standing statistics, and so do we. The buffers depend on ``bn``:

    * ``"standing"`` (default): the shadow's own buffers. Each update runs one power iteration of
      every spectral norm on the *shadow's* weights (as a training forward does for G), so its
      u/v vectors estimate the singular vectors of the averaged weights, not of G's. Batch-norm
      statistics are not copied; :meth:`refresh_bn` recomputes them from the shadow's own samples
      (standing statistics, ``sagan.models.standing``) whenever the shadow is about to be used
      (samples, FID, checkpoints). They are a function of the shadow's weights and ``bn_seed``.
    * ``"copy"``: every buffer (BN statistics, u/v) copied from G, as versions before 0.2 did;
      the EMA generator then normalises with the raw G's statistics. Kept for comparison.

    Before ``start`` steps the shadow simply copies the model. With ``warmup`` the decay ramps
    up as ``min(decay, (1 + n) / (10 + n))``, n steps after ``start`` (the schedule of
    TensorFlow's ExponentialMovingAverage with num_updates): early in training, when the weights
    move fast, a fixed 0.999 would average the initial weights into the samples for thousands
    of steps. The schedule is a function of the step only, so resuming is exact.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, start: int = 0, warmup: bool = True,
                 bn: str = "standing", bn_batches: int = STANDING_BATCHES, bn_batch_size: int = STANDING_BATCH_SIZE,
                 bn_seed: int = STANDING_SEED):
        self.decay, self.start, self.warmup = decay, start, warmup
        self.bn, self.bn_batches, self.bn_batch_size, self.bn_seed = bn, bn_batches, bn_batch_size, bn_seed
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)
        self._bn_fresh_at: int | None = None  # the step whose weights the standing statistics belong to

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
        self._bn_fresh_at = None
        if self.bn == "copy":
            src_b = dict(model.named_buffers())
            for name, b in self.shadow.named_buffers():
                b.copy_(src_b[name])
            return
        for m, p in spectral_parametrizations(self.shadow):
            if hasattr(p, "_u"):  # 1-D weights are normalised exactly, without u/v
                weight = m.parametrizations.weight.original
                if weight.dtype in (torch.float16, torch.bfloat16):  # as FP32SpectralNorm iterates
                    weight = weight.float()
                p._power_method(p._reshape_weight_to_matrix(weight), 1)

    def refresh_bn(self, step: int | None = None) -> bool:
        """Recompute the shadow's standing batch-norm statistics (``bn="standing"``; no-op for
        ``"copy"``). With ``step``, only when they were not already computed for that step's
        weights. Returns whether they were computed."""
        if self.bn != "standing" or (step is not None and self._bn_fresh_at == step):
            return False
        standing_statistics(self.shadow, self.bn_batches, self.bn_batch_size, self.bn_seed)
        self._bn_fresh_at = step
        return True

    def bn_record(self) -> dict:
        """How the shadow's batch-norm statistics were made (stored in checkpoints as ``G_ema_bn``)."""
        if self.bn == "copy":
            return {"mode": "copy"}
        return {"mode": "standing", "batches": self.bn_batches, "batch_size": self.bn_batch_size, "seed": self.bn_seed}

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
        self._bn_fresh_at = None

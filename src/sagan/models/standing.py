"""Latents and the batch-norm statistics that belong to them.

A generator's batch norms normalise, at sampling time, with their running statistics. Those are
right only for the weights and the noise they were measured with. Two things break that:

* the EMA generator averages G's weights but, if its buffers are copied from G, runs with the
  statistics of the *raw* G's activations (BN momentum 0.1: its last few training batches);
* truncated latents (|z_i| <= psi) give smaller activations than the N(0, 1) latents the
  statistics were measured under, so every image comes out darker and flatter as psi falls.

:func:`standing_statistics` recomputes them from the generator's own forward passes ("standing
statistics", as BigGAN-PyTorch does for its EMA generator): every batch norm is reset, then
accumulates the cumulative average (``momentum=None``) of the batch statistics over ``batches``
batches of ``batch_size`` latents, with labels spread evenly over the classes. The latents come
from their own seeded generator, so the result is a function of the weights, the seed and psi
only: a run and its resume compute bit-identical statistics. Only the batch norms run in training
mode; spectral-norm vectors, attention and everything else stay in eval mode and are not changed.

:func:`statistics_for_truncation` does the same for one truncation psi, for as long as a ``with``
block lasts, and puts the statistics back afterwards (pytorch-pretrained-BigGAN stores one set of
statistics per truncation; computing them takes a few seconds for the small models).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sagan.nn.spectral import sync_spectral_norm
from sagan.schema import STANDING_BATCH_SIZE, STANDING_BATCHES  # the defaults, measured (see sagan.schema)

STANDING_SEED = 0
BN_MODES = ("standing", "copy")


def truncated_normal(shape: tuple[int, ...], threshold: float, generator: torch.Generator) -> torch.Tensor:
    """Standard normal values conditioned on ``[-threshold, threshold]`` (the truncation trick of
    BigGAN, Brock et al. 2019), drawn by the inverse CDF: one uniform per value, so every
    threshold > 0 costs the same (no redrawing). ``threshold == 0`` gives zeros (the mean
    latent), ``inf`` plain ``torch.randn``. Deterministic for a given generator state."""
    if not threshold >= 0:  # also refuses NaN
        raise ValueError(f"truncation threshold must be >= 0, got {threshold}")
    if threshold == math.inf:
        return torch.randn(shape, generator=generator)
    if threshold == 0:
        return torch.zeros(shape)
    # u uniform on (-erf(t / sqrt 2), erf(t / sqrt 2)); z = sqrt(2) erfinv(u) is N(0, 1) restricted to [-t, t].
    half_mass = math.erf(threshold / math.sqrt(2.0))
    u = (2.0 * torch.rand(shape, generator=generator, dtype=torch.float64) - 1.0) * half_mass
    z = math.sqrt(2.0) * torch.special.erfinv(u)
    return z.clamp(-threshold, threshold).to(torch.get_default_dtype())


def draw_latents(n: int, z_dim: int, generator: torch.Generator, truncation: float | None = None) -> torch.Tensor:
    """``(n, z_dim)`` latents: N(0, 1), or truncated to [-psi, psi] when ``truncation`` is given."""
    if truncation is None:
        return torch.randn(n, z_dim, generator=generator)
    return truncated_normal((n, z_dim), truncation, generator)


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every batch-norm buffer of ``model`` (running mean, var, batch count), by name."""
    names = {id(m) for m in batch_norms(model)}
    return {f"{prefix}.{b}" if prefix else b: t.detach().clone()
            for prefix, m in model.named_modules() if id(m) in names
            for b, t in m.named_buffers(recurse=False)}


def load_bn_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, t in state.items():
            buffers[name].copy_(t)


def _local_forward(bn: _BatchNorm):
    """Plain ``BatchNorm2d`` maths for this module, whatever its class: standing statistics are
    computed by each process alone (a synchronised batch norm would wait for the other ranks)."""
    def forward(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG001
        return nn.BatchNorm2d.forward(bn, x)
    return forward


@torch.no_grad()
def standing_statistics(g: nn.Module, batches: int = STANDING_BATCHES, batch_size: int = STANDING_BATCH_SIZE,
                        seed: int = STANDING_SEED, truncation: float | None = None) -> None:
    """Recompute, in place, the running statistics of every batch norm of generator ``g`` as the
    average of its batch statistics over ``batches`` batches of its own samples (see the module
    docstring). ``g`` needs ``z_dim`` and ``num_classes`` (a :class:`~sagan.models.Generator`).
    Its training/eval modes and every other buffer are left as they were."""
    bns = batch_norms(g)
    if not bns:
        return
    if batches < 1 or batch_size < 2:
        raise ValueError(f"standing statistics need batches >= 1 and batch_size >= 2, got {batches} and {batch_size}")
    first = next(g.parameters())
    device, dtype = first.device, first.dtype
    modes = {id(m): m.training for m in g.modules()}
    momenta = {id(m): m.momentum for m in bns}
    gen = torch.Generator().manual_seed(int(seed))
    g.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
        m.train()
        m.forward = _local_forward(m)
    try:
        for b in range(batches):
            z = draw_latents(batch_size, g.z_dim, gen, truncation)
            y = None
            if g.num_classes > 0:
                y = (torch.arange(b * batch_size, (b + 1) * batch_size) % g.num_classes).to(device)
            g(z.to(device, dtype), y)
    finally:
        for m in bns:
            del m.forward
            m.momentum = momenta[id(m)]
        for m in g.modules():
            m.training = modes[id(m)]


@contextmanager
def statistics_for_truncation(g: nn.Module, truncation: float | None, batches: int = STANDING_BATCHES,
                              batch_size: int = STANDING_BATCH_SIZE, seed: int = STANDING_SEED) -> Iterator[None]:
    """Inside the block, ``g``'s batch norms hold standing statistics measured under latents truncated
    to psi = ``truncation``; afterwards the statistics it had. No change for ``None`` or ``inf``."""
    if truncation is None or truncation == math.inf:
        yield
        return
    saved = bn_state(g)
    standing_statistics(g, batches, batch_size, seed, truncation)
    try:
        yield
    finally:
        load_bn_state(g, saved)


def ensure_standing(g: nn.Module, record: object, mode: str = "standing") -> dict:
    """The record of how ``g``'s (an EMA generator's) BN statistics were made. Weights saved before
    standing statistics existed (no record) hold BN statistics and spectral-norm vectors copied from
    the raw G: unless the run chose ``train.ema_bn=copy``, both are recomputed here for ``g``'s own
    weights (exact singular vectors, standing statistics with the default settings)."""
    if isinstance(record, dict) and record.get("mode") in ("standing", "copy"):
        return dict(record)
    if mode == "copy":
        return {"mode": "copy"}
    sync_spectral_norm(g)
    standing_statistics(g)
    return {"mode": "standing", "batches": STANDING_BATCHES, "batch_size": STANDING_BATCH_SIZE, "seed": STANDING_SEED,
            "recomputed_at_load": True}

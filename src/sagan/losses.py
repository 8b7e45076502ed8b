"""Adversarial losses. Each returns (loss_d, loss_g) pieces; D scores are unbounded logits.

``objective(name)`` resolves a loss's two halves once (the training step holds them); ``d_loss`` and
``g_loss`` look the name up on every call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sagan.errors import ConfigError
from sagan.nn.attention import double_backward_mode
from sagan.schema import LossConfig


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _ns_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def _negative_mean_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def _ns_g(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()


@dataclass(frozen=True)
class Objective:
    """A loss by name: ``d_loss(real, fake)`` from D's scores on real and fake images, ``g_loss(fake)``
    from D's scores on fake images."""
    name: str
    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g_loss: Callable[[torch.Tensor], torch.Tensor]


OBJECTIVES = {o.name: o for o in (
    Objective("hinge", _hinge_d, _negative_mean_g),
    Objective("ns", _ns_d, _ns_g),
    Objective("wasserstein", _wasserstein_d, _negative_mean_g),
)}
LOSSES = tuple(OBJECTIVES)


def objective(name: str) -> Objective:
    """The loss called ``name`` (one of LOSSES); ValueError listing them otherwise."""
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise ValueError(f"loss {name!r} is not known; choose one of {LOSSES}") from None


def check_loss_config(lo: LossConfig) -> None:
    """ConfigError naming the first ``loss`` key that is not allowed: the name, then the penalty weight."""
    if lo.name not in LOSSES:
        raise ConfigError(f"loss.name={lo.name!r} is not known; choose one of {list(LOSSES)}")
    if not (lo.gp_weight >= 0):
        raise ConfigError(f"loss.gp_weight={lo.gp_weight} must be >= 0")


def d_loss(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from D's scores on real and fake images."""
    return objective(name).d_loss(real, fake)


def g_loss(name: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from D's scores on fake images."""
    return objective(name).g_loss(fake)


def gradient_penalty(d_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates.

    ``alpha`` (one value in [0, 1] per image) places the interpolates; drawn from torch's global
    RNG when not given. Needs a double backward, so D runs its attention layers on the explicit
    path here.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device)
    alpha = alpha.to(device=real.device, dtype=real.dtype).view(-1, 1, 1, 1)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with double_backward_mode():
        out = d_fn(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()

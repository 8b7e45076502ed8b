"""Adversarial losses. Each returns (loss_d, loss_g) pieces; D scores are unbounded logits."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from sagan.nn.attention import double_backward_mode

LOSSES = ("hinge", "ns", "wasserstein")


def d_loss(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from D's scores on real and fake images."""
    if name == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if name == "ns":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if name == "wasserstein":
        return fake.mean() - real.mean()
    raise ValueError(f"loss {name!r} is not known; choose one of {LOSSES}")


def g_loss(name: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from D's scores on fake images."""
    if name == "hinge" or name == "wasserstein":
        return -fake.mean()
    if name == "ns":
        return F.softplus(-fake).mean()
    raise ValueError(f"loss {name!r} is not known; choose one of {LOSSES}")


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

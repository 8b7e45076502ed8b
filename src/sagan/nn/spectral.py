"""Spectral-normalised layer factories.

Every weight of G and D is wrapped with ``torch.nn.utils.parametrizations.spectral_norm``
(one power iteration per training-mode forward, the u/v vectors stored as buffers so they are
checkpointed, broadcast by DDP and copied into the EMA generator).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

SN_EPS = 1e-6


class FP32SpectralNorm(_SpectralNorm):
    """PyTorch's spectral-norm parametrization with the power iteration kept in fp32.

    Under CUDA autocast ``torch.mv`` runs in fp16 while ``vdot`` does not, so the stock
    parametrization would iterate in half precision (or fail on mixed dtypes). Here autocast is
    off inside the parametrization; the normalised weight comes out in fp32 and the conv/linear
    that uses it is autocast as usual. Buffers and state-dict keys are those of
    ``torch.nn.utils.parametrizations.spectral_norm``.
    """

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.dtype in (torch.float16, torch.bfloat16):
            weight = weight.float()
        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(weight)


def sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Spectral-normalise ``module.weight`` (no-op when ``enabled`` is False)."""
    if not enabled:
        return module
    dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(module, "weight", FP32SpectralNorm(module.weight, 1, dim, SN_EPS))
    return module


def sn_conv3x3(in_ch: int, out_ch: int, enabled: bool = True) -> nn.Module:
    return sn(nn.Conv2d(in_ch, out_ch, 3, padding=1), enabled)


def sn_conv1x1(in_ch: int, out_ch: int, bias: bool = True, enabled: bool = True) -> nn.Module:
    return sn(nn.Conv2d(in_ch, out_ch, 1, bias=bias), enabled)


def sn_linear(in_f: int, out_f: int, bias: bool = True, enabled: bool = True) -> nn.Module:
    return sn(nn.Linear(in_f, out_f, bias=bias), enabled)


def sn_embedding(num: int, dim: int, enabled: bool = True) -> nn.Module:
    return sn(nn.Embedding(num, dim), enabled)


def spectral_norm_of(module: nn.Module) -> torch.Tensor:
    """Largest singular value of the *effective* (normalised) weight, computed exactly."""
    w = module.weight.detach()
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], -1).double(), ord=2)


def init_weights(model: nn.Module) -> None:
    """Orthogonal init for convs and linears (as BigGAN/SAGAN code bases do)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.orthogonal_(w)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

"""The SAGAN self-attention layer for 2-D feature maps.

Paper formulation (Zhang et al., 2019, section 3), for an input x with C channels and
N = H*W positions:

    f(x) = W_f x,  g(x) = W_g x,  h(x) = W_h x        1x1 convs to C' = C/8 channels
    s_ij = f(x_i)^T g(x_j)                             no 1/sqrt(d) scaling
    beta_{j,i} = softmax_i(s_ij)                       row j (query j) sums to 1 over keys i
    o_j = v( sum_i beta_{j,i} h(x_i) )                 v: 1x1 conv C' -> C
    y = gamma * o + x                                  gamma: one scalar, initialised to 0

So g plays the role of the query and f the key. W_f, W_g, W_h and v are linear maps without
biases, in the paper's equations and in the authors' code, and so they are here by default;
``bias=True`` gives all four 1x1 convs biases, as earlier versions of this package did for the
paper variant (a stored config without ``model.attn_bias`` is read that way, so their
checkpoints still load). The authors' released code (also used by BigGAN) is offered as
``variant="biggan"``: query/key at C/8, value h at C/2, keys and values max-pooled 2x2 (N/4 of
them), output conv C/2 -> C.

``reduction`` sets C' = C/reduction (default 8, the paper's choice; the paper reports that C/1, C/2
and C/4 work too; ``model.attn_reduction``). In the biggan variant it sets the query/key width
only; the value stays at C/2.

Two code paths compute the same function:
* the fused path, ``scaled_dot_product_attention(q, k, v, scale=1.0)`` on contiguous
  (B, heads=1, N, d) tensors, which never materialises the (B, N, N) map; used in training (on
  CPU, bf16 inputs go up to fp32 for it: PyTorch's bf16 CPU kernel is the slower one here);
* the explicit path (bmm + softmax), which also returns the map; used when maps are asked
  for and whenever a double backward is needed (gradient penalties), because the fused
  kernels do not implement one.
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sagan.errors import ConfigError
from sagan.nn.spectral import sn_conv1x1
from sagan.schema import ModelConfig

Variant = Literal["paper", "biggan"]
VARIANTS = ("paper", "biggan")
REDUCTIONS = (1, 2, 4, 8)  # C' = C / reduction for the query/key (and the paper variant's value)


def check_reduction(m: ModelConfig) -> None:
    """ConfigError unless ``model.attn_reduction`` is one of REDUCTIONS."""
    if m.attn_reduction not in REDUCTIONS:
        raise ConfigError(f"model.attn_reduction={m.attn_reduction}; choose one of {list(REDUCTIONS)} "
                          f"(query/key width C/r)")


def check_variant(m: ModelConfig) -> None:
    """ConfigError unless ``model.attn_variant`` is one of VARIANTS."""
    if m.attn_variant not in VARIANTS:
        raise ConfigError(f"model.attn_variant={m.attn_variant!r}; choose one of {list(VARIANTS)}")


_state = threading.local()


def _force_explicit() -> bool:
    return getattr(_state, "force_explicit", 0) > 0


@contextlib.contextmanager
def double_backward_mode() -> Iterator[None]:
    """Inside this context every SelfAttention2d takes the explicit path.

    Gradient penalties (WGAN-GP, R1) differentiate through a gradient, and PyTorch's fused
    attention kernels have no double backward. The loss functions that need one enter this
    context themselves, so users never have to.
    """
    _state.force_explicit = getattr(_state, "force_explicit", 0) + 1
    try:
        yield
    finally:
        _state.force_explicit -= 1


class SelfAttention2d(nn.Module):
    """Self-attention over the positions of a (B, C, H, W) feature map.

    Args:
        channels: C, the input (and output) channel count. Must be divisible by ``reduction``
            (and by 2 for the biggan variant).
        variant: ``"paper"`` (default) or ``"biggan"`` (the authors' released code).
        spectral_norm: wrap the four 1x1 convs in spectral normalisation.
        bias: give the four 1x1 convs biases (default False: the paper's equations have none).
        reduction: C' = C / reduction, one of ``REDUCTIONS`` (default 8, the paper's).

    ``forward(x, return_attention=True)`` also returns the (B, N_query, N_key) map, row j
    being the distribution over key positions for query position j (row-major over H, W).
    For the biggan variant N_key = (H/2)*(W/2).
    """

    def __init__(self, channels: int, variant: Variant = "paper", spectral_norm: bool = True, bias: bool = False,
                 reduction: int = 8):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"attention variant {variant!r} is not known; choose one of {VARIANTS}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"attention reduction {reduction!r} is not supported; choose one of {REDUCTIONS}")
        if channels % reduction != 0 or (variant == "biggan" and channels % 2 != 0):
            need = reduction if variant == "paper" else math.lcm(reduction, 2)
            raise ValueError(f"SelfAttention2d with reduction {reduction} needs channels divisible by {need}, "
                             f"got {channels}")
        self.channels = channels
        self.variant = variant
        self.reduction = reduction
        self.qk_channels = channels // reduction
        self.use_bias = bias
        self.v_channels = channels // reduction if variant == "paper" else channels // 2
        conv = (lambda i, o: sn_conv1x1(i, o, bias=bias)) if spectral_norm else (
            lambda i, o: nn.Conv2d(i, o, 1, bias=bias))
        # Names follow the paper: g = query, f = key, h = value, v = output projection.
        self.g = conv(channels, self.qk_channels)
        self.f = conv(channels, self.qk_channels)
        self.h = conv(channels, self.v_channels)
        self.v = conv(self.v_channels, channels)
        # One scalar for the whole layer (not per sample, not per channel); starts at 0.
        self.gamma = nn.Parameter(torch.zeros(()))
        self.last_attention: torch.Tensor | None = None
        self.record_attention = False

    @staticmethod
    def parameter_count(channels: int, variant: Variant = "paper", bias: bool = False, reduction: int = 8) -> int:
        """Parameters of a ``SelfAttention2d`` with these settings (gamma included), without building one."""
        qk = channels // reduction
        v = qk if variant == "paper" else channels // 2
        weights = 2 * channels * qk + 2 * channels * v
        return weights + ((2 * qk + v + channels) if bias else 0) + 1

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query (B, N, d), key (B, M, d), value (B, M, dv), all contiguous."""
        q = self.g(x)
        k = self.f(x)
        val = self.h(x)
        if self.variant == "biggan":
            k = F.max_pool2d(k, 2)
            val = F.max_pool2d(val, 2)
        q = q.flatten(2).transpose(1, 2).contiguous()
        k = k.flatten(2).transpose(1, 2).contiguous()
        val = val.flatten(2).transpose(1, 2).contiguous()
        return q, k, val

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, c, hgt, wid = x.shape
        if c != self.channels:
            raise ValueError(f"SelfAttention2d built for {self.channels} channels got {c}")
        if self.variant == "biggan" and (hgt % 2 or wid % 2):
            raise ValueError(f"biggan attention variant needs even H and W, got {hgt}x{wid}")
        q, k, val = self._qkv(x)
        explicit = return_attention or self.record_attention or _force_explicit()
        if explicit:
            # Softmax in (at least) fp32 whatever the autocast dtype: the logits are unscaled.
            acc = torch.promote_types(q.dtype, torch.float32)
            with torch.autocast(x.device.type, enabled=False):
                logits = torch.bmm(q.to(acc), k.to(acc).transpose(1, 2))  # (B, N, M)
            attn = torch.softmax(logits, dim=-1)
            out = torch.bmm(attn.to(val.dtype), val)  # (B, N, dv)
        else:
            dv = val.shape[-1]
            if q.shape[-1] != dv:
                # PyTorch's flash kernels need one head dim for q, k and v; otherwise SDPA falls
                # back to the "math" kernel, which materialises the map (biggan: d=C/8, dv=C/2).
                # Zero-padding q and k leaves every q.k product, hence the result, unchanged;
                # zero-padding v adds output columns that are dropped.
                width = max(q.shape[-1], dv)
                q, k = F.pad(q, (0, width - q.shape[-1])), F.pad(k, (0, width - k.shape[-1]))
                val = F.pad(val, (0, width - dv))
            dtype = val.dtype
            if dtype == torch.bfloat16 and x.device.type == "cpu":
                # PyTorch's CPU flash kernel runs forward + backward 2.5x slower in bf16 than in fp32
                # at these sizes (docs/speed.md): the inputs go up to fp32 (the same function, less
                # rounding), autocast kept from casting them back down.
                q, k, val = q.float(), k.float(), val.float()
            with torch.autocast(x.device.type, enabled=False) if q.dtype != dtype else contextlib.nullcontext():
                out = F.scaled_dot_product_attention(
                    q.unsqueeze(1), k.unsqueeze(1), val.unsqueeze(1), scale=1.0
                ).squeeze(1)[..., :dv].to(dtype)
            attn = None
        out = out.transpose(1, 2).reshape(b, self.v_channels, hgt, wid)
        y = self.gamma * self.v(out) + x
        if self.record_attention and attn is not None:
            self.last_attention = attn.detach()
        if return_attention:
            return y, attn
        return y

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, variant={self.variant!r}, bias={self.use_bias}, "
                f"reduction={self.reduction}")


@contextlib.contextmanager
def recording_attention(model: nn.Module) -> Iterator[dict[str, SelfAttention2d]]:
    """Make every attention layer of ``model`` keep its last map in ``.last_attention``.

    Yields a dict name -> layer; read ``layer.last_attention`` after a forward pass.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, SelfAttention2d)}
    for m in layers.values():
        m.record_attention = True
        m.last_attention = None
    try:
        yield layers
    finally:
        for m in layers.values():
            m.record_attention = False

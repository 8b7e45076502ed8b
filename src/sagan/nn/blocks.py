"""Residual blocks of the generator and discriminator (BigGAN/SAGAN style)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sagan.nn.norm import make_bn
from sagan.nn.spectral import sn, sn_conv1x1, sn_conv3x3


class GBlock(nn.Module):
    """cBN-ReLU-up-conv3x3-cBN-ReLU-conv3x3, shortcut up-conv1x1.

    Activations are out of place: ``x`` is reused by the shortcut.
    """

    def __init__(self, in_ch: int, out_ch: int, num_classes: int, upsample: bool = True, use_sn: bool = True):
        super().__init__()
        self.upsample = upsample
        self.bn1 = make_bn(in_ch, num_classes)
        self.conv1 = sn_conv3x3(in_ch, out_ch, use_sn)
        self.bn2 = make_bn(out_ch, num_classes)
        self.conv2 = sn_conv3x3(out_ch, out_ch, use_sn)
        self.learnable_sc = in_ch != out_ch or upsample
        self.conv_sc = sn_conv1x1(in_ch, out_ch, enabled=use_sn) if self.learnable_sc else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.bn1(x, y))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h, y)))
        if self.conv_sc is not None:
            x = self.conv_sc(x)
        return h + x


class DBlock(nn.Module):
    """(ReLU)-conv3x3-ReLU-conv3x3-(avgpool), shortcut (conv1x1, avgpool).

    The first block of D ("optimised block") has no pre-activation, since its input is the
    image, and applies the shortcut's pooling before its 1x1 conv (cheaper, same function
    class). Later blocks pre-activate with an out-of-place ReLU so the shortcut sees ``x``
    untouched, a bug shipped by more than one public port.
    """

    def __init__(self, in_ch: int, out_ch: int, downsample: bool = True, preactivation: bool = True, use_sn: bool = True):
        super().__init__()
        self.downsample = downsample
        self.preactivation = preactivation
        self.conv1 = sn_conv3x3(in_ch, out_ch, use_sn)
        self.conv2 = sn_conv3x3(out_ch, out_ch, use_sn)
        self.learnable_sc = in_ch != out_ch or downsample
        self.conv_sc = sn_conv1x1(in_ch, out_ch, enabled=use_sn) if self.learnable_sc else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivation:
            if self.conv_sc is not None:
                x = self.conv_sc(x)
            if self.downsample:
                x = F.avg_pool2d(x, 2)
        else:
            if self.downsample:
                x = F.avg_pool2d(x, 2)
            if self.conv_sc is not None:
                x = self.conv_sc(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv1(h)
        h = self.conv2(F.relu(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)


class ResidualBottleneck(nn.Module):
    """A local counterpart of ``SelfAttention2d``: ``y = gamma * o + x`` with ``o`` from a
    bottleneck of convolutions instead of attention,

        o = conv1x1_{b->C}( ReLU( conv3x3_{b->b}( ReLU( conv1x1_{C->b}(x) ) ) ) ),

    ``gamma`` one scalar starting at 0, as in the attention layer. With the same placement and
    (by choosing the width ``b``, see ``bottleneck_width``) the same parameter count, it is the
    control arm of the attention study: what a residual block of equal size does at that feature
    map, without the non-local view. ``bias`` gives the convs biases, like the attention layer's.
    """

    def __init__(self, channels: int, width: int, use_sn: bool = True, bias: bool = False):
        super().__init__()
        if not 1 <= width <= channels:
            raise ValueError(f"ResidualBottleneck width must be in 1..{channels}, got {width}")
        self.channels, self.width = channels, width
        self.conv_in = sn_conv1x1(channels, width, bias=bias, enabled=use_sn)
        self.conv_mid = sn(nn.Conv2d(width, width, 3, padding=1, bias=bias), use_sn)
        self.conv_out = sn_conv1x1(width, channels, bias=bias, enabled=use_sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    @staticmethod
    def parameter_count(channels: int, width: int, bias: bool = False) -> int:
        """Parameters of a ``ResidualBottleneck(channels, width, bias=bias)``, gamma included."""
        return 2 * channels * width + 9 * width * width + (2 * width + channels if bias else 0) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_mid(F.relu(self.conv_in(x)))
        return self.gamma * self.conv_out(F.relu(h)) + x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, width={self.width}"


def bottleneck_width(channels: int, target_params: int, bias: bool = False) -> int:
    """The width ``b`` whose ``ResidualBottleneck(channels, b)`` has the parameter count closest
    to ``target_params`` (e.g. an attention layer's: b = 10 for C = 64, 2180 vs 2049)."""
    return min(range(1, channels + 1),
               key=lambda w: abs(ResidualBottleneck.parameter_count(channels, w, bias) - target_params))

"""Residual blocks of the generator and discriminator (BigGAN/SAGAN style)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sagan.nn.norm import make_bn
from sagan.nn.spectral import sn_conv1x1, sn_conv3x3


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

"""The per-resolution architecture table: the single source of truth for G and D shapes.

Each entry lists, per residual block, the input and output channel multipliers (of ``ch``),
whether the block changes resolution, and the feature-map size the block outputs; attention
can follow any block whose output size appears in ``resolution``. The table follows the
SAGAN/BigGAN ImageNet architectures (bottom width 4).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sagan.nn.attention import SelfAttention2d
from sagan.nn.blocks import ResidualBottleneck, bottleneck_width

BOTTOM_WIDTH = 4


@dataclass(frozen=True)
class BlockSpec:
    in_mult: int
    out_mult: int
    resample: bool  # upsample (G) or downsample (D)
    resolution: int  # feature-map size the block outputs


def _g(mults: list[int]) -> list[BlockSpec]:
    specs, res = [], BOTTOM_WIDTH
    for a, b in zip(mults[:-1], mults[1:]):
        res *= 2
        specs.append(BlockSpec(a, b, True, res))
    return specs


# Generator: channel multipliers from the 4x4 bottom to the last block.
G_ARCH: dict[int, list[BlockSpec]] = {
    32: _g([4, 4, 4, 4]),
    64: _g([16, 16, 8, 4, 2]),
    128: _g([16, 16, 8, 4, 2, 1]),
    256: _g([16, 16, 8, 8, 4, 2, 1]),
}


def _d(image_res: int, mults: list[int], down: list[bool]) -> list[BlockSpec]:
    specs, res, prev = [], image_res, None
    for m, d in zip(mults, down):
        if d:
            res //= 2
        specs.append(BlockSpec(prev if prev is not None else 0, m, d, res))
        prev = m
    return specs


# Discriminator: in_mult 0 marks the image input (the "optimised" first block).
D_ARCH: dict[int, list[BlockSpec]] = {
    32: _d(32, [4, 4, 4, 4], [True, True, False, False]),
    64: _d(64, [1, 2, 4, 8, 16], [True, True, True, True, False]),
    128: _d(128, [1, 2, 4, 8, 16, 16], [True, True, True, True, True, False]),
    256: _d(256, [1, 2, 4, 8, 8, 16, 16], [True, True, True, True, True, True, False]),
}

RESOLUTIONS = tuple(sorted(G_ARCH))


def g_attention_sizes(resolution: int) -> list[int]:
    """Feature-map sizes after which the generator can place attention."""
    return sorted({s.resolution for s in G_ARCH[resolution]})


def d_attention_sizes(resolution: int) -> list[int]:
    """Feature-map sizes after which the discriminator can place attention."""
    return sorted({s.resolution for s in D_ARCH[resolution]})


def checked_specs(arch: dict[int, list[BlockSpec]], resolution: int, attn, who: str,
                  what: str = "attention") -> list[BlockSpec]:
    """The block specs for ``resolution``; raises ValueError naming the allowed values when the
    resolution is not in the table or a size in ``attn`` (of ``what`` layers) is never produced by ``who``."""
    if resolution not in arch:
        raise ValueError(f"resolution {resolution} is not supported; choose one of {sorted(arch)}")
    specs = arch[resolution]
    sizes = {s.resolution for s in specs}
    bad = [a for a in attn if a not in sizes]
    if bad:
        raise ValueError(f"{who} {what} at {bad} is never produced at resolution {resolution}; "
                         f"choose from {sorted(sizes)}")
    return specs


def extra_layers(channels: int, size: int, attn, resblock, variant: str, use_sn: bool, bias: bool,
                 reduction: int) -> list[nn.Module]:
    """The layers that follow a block whose output is ``size`` x ``size`` with ``channels``
    channels: a ``SelfAttention2d`` when ``size`` is in ``attn``, then a ``ResidualBottleneck``
    when it is in ``resblock``. The bottleneck's width is chosen so its parameter count is the
    closest to that of the attention layer the same settings would place there
    (``bottleneck_width``): the attention study's equal-size control."""
    layers: list[nn.Module] = []
    if size in attn:
        layers.append(SelfAttention2d(channels, variant, spectral_norm=use_sn, bias=bias, reduction=reduction))
    if size in resblock:
        target = SelfAttention2d.parameter_count(channels, variant, bias, reduction)
        layers.append(ResidualBottleneck(channels, bottleneck_width(channels, target, bias), use_sn, bias))
    return layers

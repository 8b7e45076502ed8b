"""The per-resolution architecture table: the single source of truth for G and D shapes, and the
check of a config's ``model`` section against it (``check_model_config``).

Each entry lists, per residual block, the input and output channel multipliers (of ``ch``),
whether the block changes resolution, and the feature-map size the block outputs; attention
can follow any block whose output size appears in ``resolution``. The table follows the
SAGAN/BigGAN ImageNet architectures (bottom width 4).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from sagan.errors import ConfigError
from sagan.nn.attention import SelfAttention2d, check_reduction, check_variant
from sagan.nn.blocks import ResidualBottleneck, bottleneck_width
from sagan.nn.spectral import INIT_SCHEMES, init_weights
from sagan.schema import ModelConfig

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


def layer_sizes(arch: dict[int, list[BlockSpec]], resolution: int) -> list[int]:
    """Feature-map sizes after which ``arch`` at ``resolution`` can place an attention or bottleneck
    layer: the sizes its blocks output."""
    return sorted({s.resolution for s in arch[resolution]})


def g_attention_sizes(resolution: int) -> list[int]:
    """Feature-map sizes after which the generator can place attention."""
    return layer_sizes(G_ARCH, resolution)


def d_attention_sizes(resolution: int) -> list[int]:
    """Feature-map sizes after which the discriminator can place attention."""
    return layer_sizes(D_ARCH, resolution)


def misplaced(arch: dict[int, list[BlockSpec]], resolution: int, sizes) -> list[int]:
    """The sizes in ``sizes`` that no block of ``arch`` at ``resolution`` outputs, so no layer can follow
    (empty when every size is one of ``layer_sizes``). The one placement rule: the models' constructors
    (``checked_specs``), the config check (``check_model_config``) and the export check
    (``sagan.models.export.check_generator_args``) each word what it finds."""
    allowed = layer_sizes(arch, resolution)
    return [s for s in sizes if s not in allowed]


def checked_specs(arch: dict[int, list[BlockSpec]], resolution: int, attn, who: str,
                  what: str = "attention") -> list[BlockSpec]:
    """The block specs for ``resolution``; raises ValueError naming the allowed values when the
    resolution is not in the table or a size in ``attn`` (of ``what`` layers) is never produced by ``who``."""
    if resolution not in arch:
        raise ValueError(f"resolution {resolution} is not supported; choose one of {sorted(arch)}")
    bad = misplaced(arch, resolution, attn)
    if bad:
        raise ValueError(f"{who} {what} at {bad} is never produced at resolution {resolution}; "
                         f"choose from {layer_sizes(arch, resolution)}")
    return arch[resolution]


EXTRA_PLACEMENTS = ("first", "every")


def extra_layer_blocks(specs: list[BlockSpec], sizes, placement: str = "first") -> dict[int, list[int]]:
    """Block index -> the sizes in ``sizes`` whose extra layers follow that block.

    ``"first"`` (the default): a layer at size S follows exactly one block, the first whose output is
    S x S (where the map first appears; in the generator every size has one block, in the
    discriminator the blocks after the last downsampling share the bottom size, e.g. three 8 x 8 blocks
    at 32 px). ``"every"``: one after each block of that size, as versions before 0.2 built D (kept so
    their checkpoints load; ``model.d_extra_layers``)."""
    if placement not in EXTRA_PLACEMENTS:
        raise ValueError(f"extra-layer placement {placement!r} is not known; choose one of {EXTRA_PLACEMENTS}")
    out: dict[int, list[int]] = {}
    for size in sizes:
        at = [i for i, s in enumerate(specs) if s.resolution == size]
        for i in at[:1] if placement == "first" else at:
            out.setdefault(i, []).append(size)
    return out


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def check_model_config(m: ModelConfig) -> None:
    """ConfigError naming the first ``model`` key that G and D cannot be built with, in this order: the
    resolution; the attention and bottleneck sizes (``misplaced``, each size once); the attention's
    query/key reduction (``sagan.nn.attention.check_reduction``); the widths, and the channels each
    attention layer would get; z_dim; D's extra-layer placement; the attention variant
    (``sagan.nn.attention.check_variant``); the weight init."""
    _check(m.resolution in RESOLUTIONS,
           f"model.resolution={m.resolution} is not supported; choose one of {list(RESOLUTIONS)}")
    for key, arch, sizes, what in (("model.g_attn", G_ARCH, m.g_attn, "attention"),
                                   ("model.d_attn", D_ARCH, m.d_attn, "attention"),
                                   ("model.g_resblock", G_ARCH, m.g_resblock, "residual block"),
                                   ("model.d_resblock", D_ARCH, m.d_resblock, "residual block")):
        bad = misplaced(arch, m.resolution, sizes)
        _check(not bad, f"{key}={sizes}: the architecture at resolution {m.resolution} never produces "
                        f"a {bad[0] if bad else ''}x{bad[0] if bad else ''} feature map; choose sizes from "
                        f"{layer_sizes(arch, m.resolution)} (or [] for no {what})")
        _check(len(set(sizes)) == len(sizes), f"{key}={sizes} lists a size twice")
    check_reduction(m)
    r = m.attn_reduction
    # The layer's projections: query/key to C/r, and in the biggan variant the values to C/2 (an
    # unknown variant is reported below, after the widths).
    need, why = (math.lcm(r, 2), f"C/{r} and the biggan variant's values to C/2") if m.attn_variant == "biggan" \
        else (r, f"C/{r}")
    for key, ch, arch, sizes in (("model.g_ch", m.g_ch, G_ARCH, m.g_attn), ("model.d_ch", m.d_ch, D_ARCH, m.d_attn)):
        _check(1 <= ch <= 4096, f"{key}={ch} must be between 1 and 4096")
        for spec in arch[m.resolution]:
            c = spec.out_mult * ch
            _check(spec.resolution not in sizes or c % need == 0,
                   f"{key}={ch}: the attention layer at {spec.resolution}x{spec.resolution} would get {c} "
                   f"channels, which is not divisible by {need} (attention projects to {why}); use e.g. 16, 32 "
                   "or 64")
    _check(1 <= m.z_dim <= 4096, f"model.z_dim={m.z_dim} must be between 1 and 4096")
    _check(m.d_extra_layers in EXTRA_PLACEMENTS,
           f"model.d_extra_layers={m.d_extra_layers!r}; choose one of {list(EXTRA_PLACEMENTS)}")
    check_variant(m)
    _check(m.init in INIT_SCHEMES, f"model.init={m.init!r}; choose one of {list(INIT_SCHEMES)}")


def _stream_seed(label: str) -> int:
    """A seed from torch's global RNG state and ``label``, without drawing from (moving) the global stream."""
    digest = hashlib.sha256(torch.random.get_rng_state().numpy().tobytes() + label.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@contextlib.contextmanager
def own_stream(label: str):
    """Build and initialise a layer on its own RNG stream: seeded from the global stream's state and
    ``label`` (so a function of the run's seed and the layer), and leaving the global stream where it
    was. The layers an arm adds therefore change no other weight: with the same seed, a model with and
    without them has the same backbone (the attention study's pairing, docs/experiments.md)."""
    seed = _stream_seed(label)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def add_extra_layers(stages: nn.ModuleList, specs: list[BlockSpec], widths: list[int], attn, resblock, variant: str,
                     use_sn: bool, bias: bool, reduction: int, init: str, who: str,
                     placement: str = "first") -> None:
    """Append the attention / bottleneck layers to the (already initialised) backbone ``stages``, each
    built and initialised with ``init`` on its own stream (``own_stream``); placed by ``extra_layer_blocks``.
    ``widths``: the channels of every block's output."""
    at_attn = extra_layer_blocks(specs, attn, placement)
    at_res = extra_layer_blocks(specs, resblock, placement)
    for i, stage in enumerate(stages):
        size, channels = specs[i].resolution, widths[i]
        if size in at_attn.get(i, []):
            with own_stream(f"{who}.attn{size}.block{i}"):
                layer = SelfAttention2d(channels, variant, spectral_norm=use_sn, bias=bias, reduction=reduction)
                init_weights(layer, init)
            stage.append(layer)
        if size in at_res.get(i, []):
            with own_stream(f"{who}.res{size}.block{i}"):
                target = SelfAttention2d.parameter_count(channels, variant, bias, reduction)
                layer = ResidualBottleneck(channels, bottleneck_width(channels, target, bias), use_sn, bias)
                init_weights(layer, init)
            stage.append(layer)

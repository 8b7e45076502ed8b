"""Models from a config's ``model`` section, and where their attention layers are."""
from __future__ import annotations

from typing import Any

from torch import nn

from sagan.models.arch import D_ARCH, G_ARCH
from sagan.models.discriminator import Discriminator
from sagan.models.generator import Generator
from sagan.nn.attention import SelfAttention2d
from sagan.nn.blocks import ResidualBottleneck


def build_models(m: Any, num_classes: int, channels: int,
                 class_names: list[str] | None = None) -> tuple[Generator, Discriminator]:
    """G and D for a ``model`` config section (``sagan.config.ModelConfig`` or anything with its fields)."""
    g = Generator(m.resolution, m.g_ch, m.z_dim, num_classes, channels, list(m.g_attn), m.attn_variant, m.g_sn,
                  attn_bias=m.attn_bias, init=m.init, class_names=class_names, attn_reduction=m.attn_reduction,
                  resblock=list(m.g_resblock))
    d = Discriminator(m.resolution, m.d_ch, num_classes, channels, list(m.d_attn), m.attn_variant, m.d_sn,
                      attn_bias=m.attn_bias, init=m.init, attn_reduction=m.attn_reduction, resblock=list(m.d_resblock),
                      extra_placement=m.d_extra_layers)
    return g, d


def _labelled_layers(model: nn.Module, prefix: str, kinds: dict[type, str]) -> dict[str, nn.Module]:
    """``{prefix}.{kind}{size}`` (e.g. ``D.attn8``) for each layer of ``kinds``, in model order; when
    several layers share that label (D built with ``extra_placement="every"``), each gets its block index
    too (``D.attn8.b1``, ``D.attn8.b2``, ...), so every label is unique."""
    arch = G_ARCH if isinstance(model, Generator) else D_ARCH
    found = []
    for stage_idx, stage in enumerate(model.blocks):  # type: ignore[union-attr]
        for layer in stage:
            for kind, label in kinds.items():
                if isinstance(layer, kind):
                    res = arch[model.resolution][stage_idx].resolution  # type: ignore[index]
                    found.append((f"{prefix}.{label}{res}", stage_idx, layer))
    names = [name for name, _, _ in found]
    return {(name if names.count(name) == 1 else f"{name}.b{i}"): layer for name, i, layer in found}


def attention_layers(model: nn.Module, prefix: str) -> dict[str, SelfAttention2d]:
    """Attention layers labelled by model and feature-map size, e.g. ``G.attn16``."""
    return _labelled_layers(model, prefix, {SelfAttention2d: "attn"})  # type: ignore[return-value]


def gamma_layers(model: nn.Module, prefix: str) -> dict[str, nn.Module]:
    """Every layer with a residual gate ``gamma`` (attention ``G.attn16``, bottleneck ``G.res16``)."""
    return _labelled_layers(model, prefix, {SelfAttention2d: "attn", ResidualBottleneck: "res"})


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (the figure quoted for a model, e.g. G 42.0M)."""
    return sum(p.numel() for p in module.parameters())

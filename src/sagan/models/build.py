"""Models from a config's ``model`` section, and where their attention layers are."""
from __future__ import annotations

from typing import Any

from torch import nn

from sagan.models.arch import D_ARCH, G_ARCH
from sagan.models.discriminator import Discriminator
from sagan.models.generator import Generator
from sagan.nn.attention import SelfAttention2d


def build_models(m: Any, num_classes: int, channels: int,
                 class_names: list[str] | None = None) -> tuple[Generator, Discriminator]:
    """G and D for a ``model`` config section (``sagan.config.ModelConfig`` or anything with its fields)."""
    g = Generator(m.resolution, m.g_ch, m.z_dim, num_classes, channels, list(m.g_attn), m.attn_variant, m.g_sn,
                  attn_bias=m.attn_bias, init=m.init, class_names=class_names)
    d = Discriminator(m.resolution, m.d_ch, num_classes, channels, m.d_attn, m.attn_variant, m.d_sn,
                      attn_bias=m.attn_bias, init=m.init)
    return g, d


def attention_layers(model: nn.Module, prefix: str) -> dict[str, SelfAttention2d]:
    """Attention layers labelled by model and feature-map size, e.g. ``G.attn16``."""
    arch = G_ARCH if isinstance(model, Generator) else D_ARCH
    out = {}
    for stage_idx, stage in enumerate(model.blocks):  # type: ignore[union-attr]
        for layer in stage:
            if isinstance(layer, SelfAttention2d):
                res = arch[model.resolution][stage_idx].resolution  # type: ignore[index]
                out[f"{prefix}.attn{res}"] = layer
    return out


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (the figure quoted for a model, e.g. G 42.0M)."""
    return sum(p.numel() for p in module.parameters())

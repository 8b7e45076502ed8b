"""Models from a config's ``model`` section, and where their attention layers are."""
from __future__ import annotations

from torch import nn

from sagan.models.arch import D_ARCH, G_ARCH
from sagan.models.discriminator import Discriminator
from sagan.models.generator import Generator
from sagan.nn.attention import SelfAttention2d
from sagan.nn.blocks import ResidualBottleneck
from sagan.schema import ModelConfig


def build_models(m: ModelConfig, num_classes: int, channels: int,
                 class_names: list[str] | None = None) -> tuple[Generator, Discriminator]:
    """G and D for a ``model`` config section (``Generator.from_config``, ``Discriminator.from_config``)."""
    return (Generator.from_config(m, num_classes, channels, class_names=class_names),
            Discriminator.from_config(m, num_classes, channels))


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

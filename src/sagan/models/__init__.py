"""Generator, discriminator, the per-resolution architecture table, and building them from a config.

The names below load on first use (PEP 562), so that importing a light submodule (``sagan.models.classes``)
does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "G_ARCH": "arch", "D_ARCH": "arch", "RESOLUTIONS": "arch", "g_attention_sizes": "arch", "d_attention_sizes": "arch",
    "attention_layers": "build", "build_models": "build", "count_parameters": "build", "gamma_layers": "build",
    "Discriminator": "discriminator", "Generator": "generator",
}

__all__ = ["Generator", "Discriminator", "G_ARCH", "D_ARCH", "RESOLUTIONS", "g_attention_sizes", "d_attention_sizes",
           "build_models", "attention_layers", "count_parameters", "gamma_layers"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"sagan.models.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sagan.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

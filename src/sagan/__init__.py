"""sagan-torch: Self-Attention GAN (Zhang et al., 2019) in PyTorch.

The public API, importable from the top level (loaded on first use, so ``import sagan`` and the
``sagan`` command stay fast)::

    from sagan import Generator, Discriminator, SelfAttention2d, build_models, load_config, load_run

- ``SelfAttention2d``: the attention layer, usable in any network (``return_attention=True``
  also returns the N x N attention map).
- ``Generator`` / ``Discriminator``: the models; ``Generator.from_pretrained(NAME_OR_DIR)`` loads
  a shipped model (``pretrained_names()``), a folder written by ``sagan export``, or a Hub id.
- ``load_config(preset, file, overrides)`` and ``build_models(cfg.model, num_classes, channels)``.
- ``load_run(SOURCE)``: G (EMA by default) and D of a run directory, checkpoint or export.
- ``generate``, ``seed_latents``, ``truncated_normal``, ``to_pil``: sampling helpers.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0.dev0"

_EXPORTS = {
    "SelfAttention2d": "sagan.nn.attention",
    "ConditionalBatchNorm2d": "sagan.nn.norm",
    "Generator": "sagan.models.generator",
    "Discriminator": "sagan.models.discriminator",
    "build_models": "sagan.models.build",
    "pretrained_names": "sagan.models.export",
    "Config": "sagan.config",
    "load_config": "sagan.config",
    "PRESETS": "sagan.config",
    "load_run": "sagan.sampling",
    "LoadedRun": "sagan.sampling",
    "generate": "sagan.sampling",
    "seed_latents": "sagan.sampling",
    "to_pil": "sagan.sampling",
    "truncated_normal": "sagan.models.standing",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sagan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""A Trainer of a preset on synthetic images, for the benchmarks that time or profile its step
(``measure`` and ``profile``): no dataset on disk, and nothing about the step changed."""
from __future__ import annotations

from pathlib import Path

import torch

from sagan.config import load_config
from sagan.data.datasets import ImageData, dataset_spec
from sagan.train.resolve import resolve_for_data
from sagan.train.trainer import Trainer


def _synthetic_data(resolution: int, channels: int, classes: int, n: int) -> ImageData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, resolution, resolution), generator=g, dtype=torch.uint8)
    return ImageData("synthetic", "random uint8 images", classes, channels, resolution,
                     [str(i) for i in range(classes)], images, torch.arange(n) % classes)


def synthetic_trainer(preset_name: str, batch: int, device: torch.device, run_dir: Path,
                      overrides: list[str] | None = None) -> Trainer:
    """A Trainer of ``preset_name`` at ``batch`` on synthetic images shaped like the preset's data (an
    image folder as 3 channels, 1000 classes), writing into ``run_dir``."""
    cfg = load_config(preset_name, None, [f"train.batch_size={batch}", f"train.device={device}",
                                          "train.log_every=1000000", *(overrides or [])])
    spec = dataset_spec(cfg.data.dataset)
    data = _synthetic_data(cfg.model.resolution, spec.channels or 3, spec.num_classes or 1000, max(2 * batch, 16))
    return Trainer(resolve_for_data(cfg, data, device)[0], run_dir, data, progress=False)

"""Sample grids."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, padding: int = 2) -> Path:
    """Save images in [-1, 1] as a PNG grid with ``nrow`` images per row (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    save_image(images.clamp(-1, 1), tmp, nrow=nrow, padding=padding, normalize=True, value_range=(-1, 1))
    tmp.replace(path)
    return path

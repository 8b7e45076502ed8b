"""Sample grids: images in [-1, 1] as one PNG (the run, `sagan sample` and the report all use these)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import torch
from torchvision.utils import save_image

from sagan.fileio import atomic_path


def _write_grid(images: torch.Tensor, fp: str | Path | BinaryIO, nrow: int, padding: int) -> None:
    save_image(images.clamp(-1, 1), fp, format="png", nrow=nrow, padding=padding, normalize=True,
               value_range=(-1, 1))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, padding: int = 2) -> Path:
    """Save images in [-1, 1] as a PNG grid with ``nrow`` images per row (written atomically)."""
    png = grid_png(images, nrow, padding)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return Path(path)


def grid_png(images: torch.Tensor, nrow: int, padding: int = 2) -> bytes:
    """The bytes of the PNG ``save_grid`` writes for the same images."""
    buf = io.BytesIO()
    _write_grid(images, buf, nrow, padding)
    return buf.getvalue()

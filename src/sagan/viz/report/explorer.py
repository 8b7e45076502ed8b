"""The interactive attention explorer's data: generated images and their attention maps, encoded
for the page's JavaScript.

Each layer's maps are stored as uint8 rows scaled to the row's own peak (the peaks as float32),
for queries on every ``stride``-th feature cell, the stride chosen so that all layers fit the
byte budget (:data:`EXPLORER_BUDGET_BYTES` by default); arrays travel as little-endian base64.
:func:`decode_layer` is the inverse of :func:`encode_layer` (for tests).
"""
from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import torch

from sagan.data.datasets import to_uint8
from sagan.viz import attention as A

EXPLORER_BUDGET_BYTES = 8 * 2 ** 20  # uint8 attention weights embedded for the explorer


def b64(arr: np.ndarray) -> str:
    """Little-endian bytes of ``arr``, base64 (what the page's JavaScript decodes)."""
    return base64.b64encode(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()).decode("ascii")


def explorer_stride(side: int, n_keys: int, n_images: int, n_layers: int, budget: int) -> int:
    """Query stride (1 = every feature cell) so the embedded maps fit ``budget`` bytes per layer set."""
    stride = 1
    while stride < side and n_images * n_layers * math.ceil(side / stride) ** 2 * n_keys > budget:
        stride += 1
    return stride


def encode_layer(label: str, maps: torch.Tensor, budget: int, n_layers: int) -> dict[str, Any]:
    """(B, N, N_key) float maps -> the explorer's layer record.

    Rows are stored as uint8 scaled to the row's own peak (``peaks``, float32), for queries on
    every ``stride``-th feature cell (the centre cell of each stride x stride block).
    """
    b, n, m = maps.shape
    side = A.grid_side(n, f"{label} query count")
    kside = A.grid_side(m, f"{label} key count")
    stride = explorer_stride(side, m, b, n_layers, budget)
    centres = [min(i * stride + stride // 2, side - 1) for i in range(math.ceil(side / stride))]
    idx = torch.tensor([fy * side + fx for fy in centres for fx in centres])
    rows = maps[:, idx, :].float()  # (B, Nq, M)
    peaks = rows.amax(-1, keepdim=True).clamp_min(1e-12)
    q = (rows / peaks * 255).round().clamp(0, 255).to(torch.uint8)
    return {"label": label, "qside": side, "stride": stride, "qgrid": len(centres), "kside": kside,
            "rows": b64(q.numpy()), "peaks": b64(peaks[..., 0].numpy().astype(np.float32))}


def decode_layer(rec: dict[str, Any], n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode_layer`` (for tests): (B, Nq, M) weights and the query cells (Nq, 2) as (fx, fy)."""
    q = np.frombuffer(base64.b64decode(rec["rows"]), dtype=np.uint8)
    peaks = np.frombuffer(base64.b64decode(rec["peaks"]), dtype="<f4")
    nq = rec["qgrid"] ** 2
    w = q.reshape(n_images, nq, -1).astype(np.float64) / 255.0 * peaks.reshape(n_images, nq, 1)
    centres = [min(i * rec["stride"] + rec["stride"] // 2, rec["qside"] - 1) for i in range(rec["qgrid"])]
    cells = np.array([(fx, fy) for fy in centres for fx in centres])
    return w, cells


def explorer_data(images: torch.Tensor, titles: list[str], maps: dict[str, torch.Tensor],
                  start_points: list[tuple[int, int]], budget: int = EXPLORER_BUDGET_BYTES) -> dict[str, Any]:
    """The explorer's record: the images' pixels, each layer's encoded maps (``encode_layer``), the
    heat-map colours and each image's first query point."""
    res, channels = images.shape[-1], images.shape[1]
    pixels = to_uint8(images).permute(0, 2, 3, 1)  # B, H, W, C
    return {
        "resolution": res, "channels": channels,
        "images": [{"title": t, "pixels": b64(pixels[i].numpy())} for i, t in enumerate(titles)],
        "layers": [encode_layer(k, v, budget, len(maps)) for k, v in maps.items()],
        "lut": b64(A.heat_colors()), "maxAlpha": A.HEAT_MAX_ALPHA, "gamma": A.HEAT_GAMMA,
        "start": [list(p) for p in start_points],
    }

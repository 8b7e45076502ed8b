"""Nearest training images of generated ones, in pixel space: the usual check for memorisation.

A generator that copies its training images shows it here first: a sample whose nearest training
image is at distance (near) 0. The distance is the Euclidean distance between the uint8 pixel
values, reported as the root-mean-square difference per pixel value, in grey levels (0-255): 0 for
an exact copy, about 10 for images that look alike. Pixel space, not a feature space, so that any
dataset can be searched without a feature extractor and an exact copy is exactly 0 (squared
distances of uint8 images are integers, computed exactly in float64).
"""
from __future__ import annotations

import torch

from sagan.errors import UsageError

BANK_CHUNK = 4096  # training images compared at once (memory: chunk x pixels float64)


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int = 5,
                       chunk: int = BANK_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` images of ``bank`` nearest to each of ``queries`` (both uint8 (N, C, H, W) of one shape).

    Returns (distances (Q, k) float64, the RMS difference per pixel value in grey levels, nearest first;
    indices (Q, k) int64 into ``bank``). Ties are broken by the lower index.
    """
    if queries.dtype != torch.uint8 or bank.dtype != torch.uint8:
        raise UsageError("nearest_neighbours compares uint8 images; convert [-1, 1] floats with "
                         "sagan.data.datasets.to_uint8")
    if queries.dim() != 4 or queries.shape[1:] != bank.shape[1:]:
        raise UsageError(f"nearest_neighbours: queries {tuple(queries.shape)} and bank {tuple(bank.shape)} are not "
                         "images (N, C, H, W) of one size")
    if not 1 <= k <= len(bank):
        raise UsageError(f"nearest_neighbours: k = {k}, and the bank holds {len(bank)} images")
    q = queries.flatten(1).double()
    qq = q.pow(2).sum(1, keepdim=True)
    best_d = torch.empty(len(q), 0, dtype=torch.float64)
    best_i = torch.empty(len(q), 0, dtype=torch.int64)
    for start in range(0, len(bank), chunk):
        b = bank[start:start + chunk].flatten(1).double()
        d2 = qq + b.pow(2).sum(1) - 2 * q @ b.T  # integers below 2**53: exact
        d = torch.cat([best_d, d2], 1)
        i = torch.cat([best_i, torch.arange(start, start + len(b)).expand(len(q), -1)], 1)
        # stable sort by distance: among equal distances the earlier (lower) index comes first
        order = torch.sort(d, dim=1, stable=True).indices[:, :k]
        best_d, best_i = d.gather(1, order), i.gather(1, order)
    return (best_d.clamp_min(0) / q.shape[1]).sqrt(), best_i

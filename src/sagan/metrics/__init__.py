"""Evaluation metrics (IS, FID, KID, precision/recall) and feature extractors.

- :mod:`sagan.metrics.evaluation`: :func:`compute_metrics`, the one entry point (torch-fidelity maths).
- :mod:`sagan.metrics.extractors`: the Inception weights lookup and our torch-fidelity extractor.
- :mod:`sagan.metrics.classifier`: the offline Fashion-MNIST classifier and its training.
- :mod:`sagan.metrics.reference`: real reference images and their cache names.
- :mod:`sagan.metrics.tracking`: FID during training (:class:`TrainingFID`).
- :mod:`sagan.metrics.naming`: metric names that carry the extractor (``fid`` with Inception,
  ``fid_fmnist`` with the Fashion-MNIST classifier): :func:`~sagan.metrics.naming.metric_key`.

Imports are lazy so that ``import sagan.metrics`` stays cheap.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["compute_metrics", "reference_for", "resolve_inception_weights", "TrainingFID"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "fmnist_cnn.pt"  # the Fashion-MNIST classifier's (sagan.metrics.classifier); here for `--help`


def __getattr__(name: str):
    if name == "compute_metrics":
        from sagan.metrics.evaluation import compute_metrics
        return compute_metrics
    if name == "reference_for":
        from sagan.metrics.reference import reference_for
        return reference_for
    if name == "resolve_inception_weights":
        from sagan.metrics.extractors import resolve_inception_weights
        return resolve_inception_weights
    if name == "TrainingFID":
        from sagan.metrics.tracking import TrainingFID
        return TrainingFID
    raise AttributeError(f"module 'sagan.metrics' has no attribute {name!r}")

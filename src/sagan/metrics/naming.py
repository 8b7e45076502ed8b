"""Metric names that say which features the numbers were computed on.

IS, FID, KID and precision/recall depend on the feature extractor as much as on the images: an FID
on the Fashion-MNIST classifier's 128-d features is a different quantity from the Inception FID
that papers report, and one must never be read as the other. One rule names them everywhere
(``sagan evaluate``'s JSON and table, the training-time scalars in metrics.csv and TensorBoard):

- with Inception features (the standard) the usual names: ``is_mean``, ``fid``, ``kid_mean``,
  ``precision``, ..., ``eval/fid``;
- with any other extractor its name as a suffix: ``fid_fmnist``, ``is_mean_fmnist``,
  ``precision_fmnist``, ``eval/fid_fmnist``, ``eval/best_fid_fmnist``.

Names of numbers that are not feature statistics (``class_accuracy``, ``eval/class_acc``, counts,
seconds) stay as they are. Runs written before this rule have ``eval/fid`` and ``eval/is`` columns
whatever the extractor (``train.fid_features`` in their config says which).
"""
from __future__ import annotations

STANDARD_FEATURES = "inception"

# The feature statistics (bare names; a "prefix/" such as "eval/" is kept in front of them).
FEATURE_METRICS = frozenset({"is", "is_mean", "is_std", "fid", "best_fid", "kid_mean", "kid_std",
                             "precision", "recall", "f_score", "ifid"})

FEATURE_TITLES = {"inception": "Inception features", "fmnist": "Fashion-MNIST classifier features"}

METRIC_TITLES = {"is": "IS", "is_mean": "IS", "is_std": "IS std", "fid": "FID", "best_fid": "best FID",
                 "kid_mean": "KID", "kid_std": "KID std", "precision": "precision", "recall": "recall",
                 "f_score": "F-score", "ifid": "iFID", "class_accuracy": "class accuracy"}


def metric_key(name: str, features: str) -> str:
    """The stored name of metric ``name`` (``fid``, ``eval/fid``, ...) computed on ``features``."""
    base = name.rpartition("/")[2]
    if features == STANDARD_FEATURES or base not in FEATURE_METRICS:
        return name
    return f"{name}_{features}"


def metric_keys(values: dict, features: str) -> dict:
    """``values`` (bare metric names, as :func:`sagan.metrics.evaluation.compute_metrics` returns
    them) with every key named by :func:`metric_key`."""
    return {metric_key(k, features): v for k, v in values.items()}


def features_title(features: str) -> str:
    """``Inception features``, ``Fashion-MNIST classifier features``, or ``<name> features``."""
    return FEATURE_TITLES.get(features, f"{features} features")


def metric_label(name: str, features: str) -> str:
    """What a person reads: ``FID (Inception)``, ``FID (Fashion-MNIST classifier features)``;
    names that are not feature statistics get no extractor (``class accuracy``)."""
    base = name.rpartition("/")[2]
    title = METRIC_TITLES.get(base, base.replace("_", " "))
    if base not in FEATURE_METRICS:
        return title
    return f"{title} ({'Inception' if features == STANDARD_FEATURES else features_title(features)})"

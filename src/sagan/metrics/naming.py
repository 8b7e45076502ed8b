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

The titles a person reads come from here too, for every page that shows metrics (``sagan evaluate``'s
table, the HTML report's charts and tables, a study's results.md and page): :func:`metric_title`
(``FID``), :func:`metric_label` (``FID (Inception)``, ``FID (Fashion-MNIST classifier features;
lower is better)``), and :func:`key_label` for a stored key (``eval/fid_fmnist``).
"""
from __future__ import annotations

import re

STANDARD_FEATURES = "inception"

# The feature statistics (bare names; a "prefix/" such as "eval/" is kept in front of them).
FEATURE_METRICS = frozenset({"is", "is_mean", "is_std", "fid", "best_fid", "kid_mean", "kid_std",
                             "precision", "recall", "f_score", "ifid"})

FEATURE_TITLES = {"inception": "Inception features", "fmnist": "Fashion-MNIST classifier features"}

METRIC_TITLES = {"is": "IS", "is_mean": "IS", "is_std": "IS std", "fid": "FID", "best_fid": "best FID",
                 "kid_mean": "KID", "kid_std": "KID std", "precision": "precision", "recall": "recall",
                 "f_score": "F-score", "ifid": "iFID", "class_accuracy": "class accuracy"}

# Numbers a study derives from each run's records (sagan.study.results); they are never stored under
# metric_key names. The FIDs among them are labelled with their features like the feature statistics.
STUDY_METRIC_TITLES = {"endpoint_fid": "training-time FID, mean of the last evaluations",
                       "best_tracked_fid": "best training-time FID", "minutes": "wall minutes per run",
                       "d_margin": "D margin"}
STUDY_FEATURE_METRICS = frozenset({"endpoint_fid", "best_tracked_fid"})

LOWER_IS_BETTER = frozenset({"fid", "best_fid", "ifid", "kid_mean", "endpoint_fid", "best_tracked_fid"})


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


def features_label(features: str) -> str:
    """The features as a metric's label names them: ``Inception`` for the standard ones, else
    :func:`features_title` (``Fashion-MNIST classifier features``)."""
    return "Inception" if features == STANDARD_FEATURES else features_title(features)


def metric_title(name: str) -> str:
    """The title of metric ``name`` (bare or with a prefix such as ``eval/``) without its features:
    ``FID``, ``class accuracy``, ``best training-time FID``; an unknown name with spaces for ``_``."""
    base = name.rpartition("/")[2]
    return METRIC_TITLES.get(base) or STUDY_METRIC_TITLES.get(base) or base.replace("_", " ")


def metric_label(name: str, features: str | None, detail: str | None = None) -> str:
    """What a person reads: ``FID (Inception)``, ``FID (Fashion-MNIST classifier features)``;
    names that are not feature statistics get no extractor (``class accuracy``), nor does any name
    when ``features`` is None. ``detail`` follows the features in the brackets (``FID (Inception;
    lower is better)``, ``D margin (mean D(real) - D(fake), ...)``)."""
    base = name.rpartition("/")[2]
    parts = [features_label(features)] if features and base in FEATURE_METRICS | STUDY_FEATURE_METRICS else []
    parts += [detail] if detail else []
    return f"{metric_title(name)} ({'; '.join(parts)})" if parts else metric_title(name)


def better(name: str) -> str:
    """``lower is better`` (FID, KID and the FIDs a study derives) or ``higher is better``."""
    return "lower is better" if name.rpartition("/")[2] in LOWER_IS_BETTER else "higher is better"


def metric_features(key: str, plain: str = STANDARD_FEATURES) -> tuple[str, str] | None:
    """(metric, features) of a key named by :func:`metric_key`: ``eval/fid_fmnist`` -> ("fid",
    "fmnist"), ``metrics.kid_mean`` -> ("kid_mean", ``plain``); None for a key that is no feature
    statistic. ``plain``: the features behind un-suffixed keys (Inception, but not in the records
    of older runs, which wrote ``eval/fid`` whatever the features)."""
    leaf = re.split(r"[./]", key)[-1]
    if leaf in FEATURE_METRICS:
        return leaf, plain
    base, _, features = leaf.rpartition("_")
    return (base, features) if base in FEATURE_METRICS and features else None


def key_label(key: str, plain: str = STANDARD_FEATURES) -> str | None:
    """What a person reads for a stored key (dots or slashes before the name: ``eval/fid_fmnist``,
    ``metrics.class_accuracy``): "FID (Fashion-MNIST classifier features)", "class accuracy"; None
    for keys that are no metric (counts, seconds, settings). ``plain`` as in :func:`metric_features`."""
    found = metric_features(key, plain)
    if found:
        return metric_label(*found)
    return METRIC_TITLES.get(re.split(r"[./]", key)[-1])


def bare_metric(key: str, features: str) -> str:
    """The bare name of a key :func:`metric_key` named for ``features``: ``fid_fmnist`` -> ``fid``
    for the Fashion-MNIST classifier; keys of the standard features are bare already."""
    suffix = f"_{features}"
    return key[: -len(suffix)] if features != STANDARD_FEATURES and key.endswith(suffix) else key

"""One entry point that turns images into metrics, with torch-fidelity doing the maths.

:func:`compute_metrics` extracts features with a registered torch-fidelity extractor
(``sagan-inception-v3-compat``, torch-fidelity's Inception with its weights read as data, or our
``sagan-fmnist-cnn``), caches the real reference's features and statistics as plain tensors
(:mod:`sagan.metrics.reference`; torch-fidelity's own cache would unpickle them with
``weights_only=False``), and calls torch-fidelity's own IS, FID, KID and precision/recall
functions on the features. The class accuracy of conditional samples (the fraction of samples the
classifier assigns to the class they were generated for, overall and per class) and the
intra-class FID (``ifid``: FID per class, averaged; :mod:`sagan.metrics.perclass`) are not
torch-fidelity metrics and are computed here, from the same features.

The steps are also available one by one, for callers that extract the generated images'
features themselves (in shards, or with an extractor kept between calls, as FID during
training does): :func:`extract_features` / :func:`extract_with`, :func:`reference_features`
(the real side, through the cache) and :func:`scores_from_features` (features -> numbers).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from sagan.data.datasets import DATASETS
from sagan.distributed import all_gather_objects
from sagan.errors import DataError, MetricsError
from sagan.extras import requires
from sagan.fileio import NotPlainTensors, load_plain_tensors
from sagan.metrics.classifier import NUM_CLASSES
from sagan.metrics.extractors import (
    FEATURES,
    FIDELITY_NAMES,
    extractor_input_channels,
    extractor_layers,
    register_extractors,
    resolve_inception_weights,
)
from sagan.metrics.perclass import class_counts, intra_class_fids, per_class_accuracy
from sagan.metrics.reference import (
    ImageTensorDataset,
    Reference,
    cache_files,
    read_cached_features,
    read_cached_statistics,
    stats_dir,
    write_cache_file,
)

with requires("eval"):
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_featuresdict_to_statistics,
        fid_statistics_to_metric,
    )
    from torch_fidelity.metric_isc import (
        KEY_METRIC_ISC_MEAN,
        KEY_METRIC_ISC_STD,
        isc_featuresdict_to_metric,
    )
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_featuresdict_to_metric,
    )
    from torch_fidelity.metric_prc import (
        KEY_METRIC_F_SCORE,
        KEY_METRIC_PRECISION,
        KEY_METRIC_RECALL,
        prc_featuresdict_to_metric,
    )
    from torch_fidelity.utils import (
        create_feature_extractor,
        extract_featuresdict_from_input_id,
        extract_featuresdict_from_input_id_cached,
    )

METRICS = ("is", "fid", "kid", "pr", "ifid")
BINARY = ("fid", "kid", "pr", "ifid")  # compared with real images, at the extractor's FID layer


def parse_metrics(text: str | Iterable[str]) -> list[str]:
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise MetricsError(f"metrics {bad or names}: choose from {', '.join(METRICS)} (comma-separated)")
    return [m for m in METRICS if m in names]


def class_accuracy_applies(dataset: str, num_classes: int, features: str) -> bool:
    """Whether the classifier's predictions measure a generator's class accuracy: the dataset's own
    extractor is the classifier, it is the one used, and the generator has the classifier's classes."""
    spec = DATASETS.get(dataset)  # None for data built in code under a name of its own
    return features == "fmnist" and spec is not None and spec.features == "fmnist" and num_classes == NUM_CLASSES


def fidelity_kwargs(device: torch.device, batch_size: int, features: str, weights: Path | None,
                    progress: bool, seed: int) -> dict[str, Any]:
    """The keyword arguments every torch-fidelity call here gets (extractor, batch size, seed).

    torch-fidelity's cache is off: it unpickles its files with ``weights_only=False``; the
    reference's features are cached here instead (:func:`reference_features`).
    """
    return dict(
        cuda=device.type == "cuda", batch_size=batch_size, feature_extractor=FIDELITY_NAMES[features],
        feature_extractor_weights_path=str(weights) if weights is not None else None,
        cache=False, save_cpu_ram=True, verbose=progress, rng_seed=seed, prc_batch_size=2000,
    )


def _check_request(metrics: list[str], features: str, reference: Reference | None,
                   fake_classes: torch.Tensor | None = None) -> None:
    if features not in FEATURES:
        raise MetricsError(f"features {features!r}: choose one of {list(FEATURES)}")
    binary = [m for m in metrics if m in BINARY]
    if binary and reference is None:
        raise MetricsError(f"{', '.join(binary)} compare with real images; give a reference")
    if "ifid" in metrics and fake_classes is None:
        raise MetricsError("ifid (intra-class FID) compares the images of each class; give their classes")


def fake_feature_layers(metrics: Iterable[str], features: str, class_accuracy: bool = False) -> list[str]:
    """The extractor layers the generated images are needed at for ``metrics``."""
    metrics = parse_metrics(metrics)
    layers = extractor_layers(features)
    return sorted({layers["isc"] for m in metrics if m == "is"}
                  | {layers["fid"] for m in metrics if m in BINARY}
                  | ({"logits"} if class_accuracy else set()))


def extract_with(extractor, images: torch.Tensor, features: str, kw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Features of uint8 ``images`` from a torch-fidelity ``extractor`` of ``features``, on the CPU."""
    kw = dict(kw, input1=ImageTensorDataset(images, extractor_input_channels(features)))
    return {k: v.cpu() for k, v in extract_featuresdict_from_input_id_cached(1, extractor, **kw).items()}


def extract_features(images: torch.Tensor, layers: list[str], features: str = "fmnist", *,
                     device: str | torch.device = "cpu", batch_size: int = 256, progress: bool = True,
                     inception_weights: str | Path | None = None, seed: int = 2020) -> dict[str, torch.Tensor]:
    """torch-fidelity features of uint8 ``images`` (N, C, H, W) at ``layers``, as a dict of (N, D) tensors."""
    if images.dtype != torch.uint8:
        raise MetricsError("features are taken from uint8 images; convert [-1, 1] floats with "
                           "sagan.data.datasets.to_uint8")
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    register_extractors()
    logits = any(layer.startswith("logits") for layer in layers)  # IS: not in the weights converted offline
    weights = resolve_inception_weights(inception_weights, logits=logits) if features == "inception" else None
    kw = fidelity_kwargs(device, batch_size, features, weights, progress, seed)
    extractor = create_feature_extractor(FIDELITY_NAMES[features], layers, **kw)
    return extract_with(extractor, images, features, kw)


@dataclass
class ReferenceFeatures:
    """The real side of FID/KID/precision-recall: the reference's features at the extractor's FID layer
    and (when FID is wanted) their FID statistics, both through the statistics cache."""
    num_images: int
    features: dict[str, torch.Tensor] | None  # None when dropped: FID needs only the statistics
    fid_statistics: dict[str, Any] | None
    labels: torch.Tensor | None = None  # the images' classes, in the features' order (for iFID)

    def statistics_only(self) -> "ReferenceFeatures":
        """Without the per-image features (enough for FID; KID, precision/recall and iFID need them)."""
        return ReferenceFeatures(self.num_images, None, self.fid_statistics)


def reference_labels(reference: Reference, count: int | None = None) -> torch.Tensor | None:
    """The classes of ``reference``'s images (``count`` of them, when given), in the order of its
    features; None when it has none. Cached next to the features (``<cache name>-labels.pt``, a plain
    int64 tensor), so that a cache hit loads no image; a cache file that is not such a tensor is refused."""
    path = stats_dir() / f"{reference.cache_name}-labels.pt"
    if path.is_file():
        try:
            labels = load_plain_tensors(path)
        except NotPlainTensors as e:
            labels = e
        if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.dim() == 1):
            raise DataError(f"statistics cache file {path} does not hold the class labels of the reference (an "
                            "int64 tensor); delete it and it is recomputed")
    else:
        labels = reference.load()[1]
        if labels is None:
            return None
        labels = labels.long().cpu()
        write_cache_file(path, labels)
    if count is not None and labels.shape != (count,):
        raise DataError(f"the reference has {len(labels)} labels for {count} cached features; delete the statistics "
                        f"cache ({stats_dir()}) and it is recomputed")
    return labels


def reference_features(reference: Reference, features: str, kw: dict[str, Any],
                       fid_statistics: bool = True, labels: bool = False) -> ReferenceFeatures:
    """``reference``'s features (and FID statistics, and with ``labels`` the images' classes) for the
    extractor ``features``; ``kw`` from :func:`fidelity_kwargs`. A cache hit loads nothing but the
    cached tensors (no extractor, no images); a cache file that is not plain tensors of the right
    shapes is refused (DataError)."""
    layer = extractor_layers(features)["fid"]
    features_file, stats_file = cache_files(reference.features_cache_name(features), features, layer)
    real = read_cached_features(features_file, layer)
    if real is None:
        kw = dict(kw, input2=reference.dataset_for(extractor_input_channels(features)))
        fe_real = create_feature_extractor(FIDELITY_NAMES[features], [layer], **kw)
        real = extract_featuresdict_from_input_id(2, fe_real, **kw)[layer].cpu()
        write_cache_file(features_file, real)
    f2 = {layer: real}
    stats = None
    if fid_statistics:
        cached = read_cached_statistics(stats_file, real.shape[1])
        if cached is None:
            stats = fid_featuresdict_to_statistics(f2, layer)
            write_cache_file(stats_file, {k: torch.from_numpy(v) for k, v in stats.items()})
        else:  # the dtypes torch-fidelity's numpy gives (np.mean keeps float32, np.cov is float64 at least)
            dtype = real.numpy().dtype
            stats = {"mu": cached["mu"].numpy().astype(dtype, copy=False),
                     "sigma": cached["sigma"].numpy().astype(np.result_type(dtype, np.float64), copy=False)}
    return ReferenceFeatures(len(real), f2, stats, reference_labels(reference, len(real)) if labels else None)


def scores_from_features(f1: dict[str, torch.Tensor], metrics: Iterable[str], features: str,
                         real: ReferenceFeatures | None, kw: dict[str, Any], *,
                         fake_labels: torch.Tensor | None = None, fake_classes: torch.Tensor | None = None,
                         kid_subset_size: int = 1000, isc_splits: int = 10) -> dict[str, Any]:
    """The metrics of generated images from their features ``f1`` (the one place features become numbers).

    ``real`` is the reference's side (:func:`reference_features`), needed for FID, KID,
    precision/recall and iFID (with its labels); ``kw`` comes from :func:`fidelity_kwargs`. With
    ``fake_labels`` (the classifier's classes) and ``logits`` in ``f1``, the class accuracy is
    added, overall and per class. ``fake_classes`` are the images' classes as the reference numbers
    them, for ``ifid``. Returns (those that apply, in this order) ``num_fake``, ``is_mean``,
    ``is_std``, ``class_accuracy``, ``num_real``, ``fid``, ``kid_mean``, ``kid_std``,
    ``kid_subset_size``, ``precision``, ``recall``, ``f_score``, ``ifid``; with the class accuracy
    ``per_class_accuracy`` ({classifier class: accuracy}), with ``ifid`` ``per_class_fid``
    ({reference class: {"fid", "num_generated", "num_real"}}).
    """
    metrics = parse_metrics(metrics)
    layers = extractor_layers(features)
    quiet = dict(kw, verbose=False)
    out: dict[str, Any] = {"num_fake": len(next(iter(f1.values())))}
    if "is" in metrics:
        r = isc_featuresdict_to_metric(f1, layers["isc"], **dict(quiet, isc_splits=isc_splits))
        out["is_mean"], out["is_std"] = r[KEY_METRIC_ISC_MEAN], r[KEY_METRIC_ISC_STD]
    if fake_labels is not None and "logits" in f1:
        pred = f1["logits"].argmax(1)
        out["class_accuracy"] = float((pred == fake_labels.to(pred.device)).double().mean())
        out["per_class_accuracy"] = per_class_accuracy(pred, fake_labels)
    if not any(m in BINARY for m in metrics):
        return out
    binary = [m for m in metrics if m in BINARY]
    if real is None or (real.features is None and binary != ["fid"]):
        raise MetricsError(f"{', '.join(binary)} compare with real images; give the reference's features")
    if "ifid" in metrics and (fake_classes is None or real.labels is None):
        raise MetricsError("ifid (intra-class FID) needs the classes of the generated and of the real images")
    layer = layers["fid"]
    assert layers["kid"] == layer and layers["prc"] == layer
    f2 = real.features
    out["num_real"] = real.num_images
    if "fid" in metrics:
        s1 = fid_featuresdict_to_statistics(f1, layer)
        out["fid"] = fid_statistics_to_metric(s1, real.fid_statistics, False)[KEY_METRIC_FID]
    if "kid" in metrics:
        size = min(kid_subset_size, len(f1[layer]), len(f2[layer]))
        r = kid_featuresdict_to_metric(f1, f2, layer, **dict(quiet, kid_subset_size=size))
        out["kid_mean"], out["kid_std"], out["kid_subset_size"] = r[KEY_METRIC_KID_MEAN], r[KEY_METRIC_KID_STD], size
    if "pr" in metrics:
        if min(len(f1[layer]), len(f2[layer])) < 5:
            raise MetricsError("precision/recall needs at least 5 images on each side (k = 3 neighbours)")
        r = prc_featuresdict_to_metric(f1, f2, layer, **quiet)
        out["precision"], out["recall"], out["f_score"] = (r[KEY_METRIC_PRECISION], r[KEY_METRIC_RECALL],
                                                           r[KEY_METRIC_F_SCORE])
    if "ifid" in metrics:
        fids = intra_class_fids(f1[layer], fake_classes, f2[layer], real.labels)
        out["ifid"] = sum(fids.values()) / len(fids)
        real_n, fake_n = class_counts(real.labels), class_counts(fake_classes)
        out["per_class_fid"] = {c: {"fid": fid, "num_generated": fake_n[c], "num_real": real_n[c]}
                                for c, fid in fids.items()}
    return out


def metrics_from_features(f1: dict[str, torch.Tensor], reference: Reference | None, metrics: Iterable[str],
                          features: str = "fmnist", *, fake_labels: torch.Tensor | None = None,
                          fake_classes: torch.Tensor | None = None,
                          device: str | torch.device = "cpu", batch_size: int = 256, progress: bool = True,
                          inception_weights: str | Path | None = None, seed: int = 2020,
                          kid_subset_size: int = 1000, isc_splits: int = 10) -> dict:
    """Metrics from the generated images' features ``f1`` (see :func:`compute_metrics` for the result).

    The real side (``reference``) is extracted here, through torch-fidelity's cache. Used directly
    when the features were extracted in shards by several processes and gathered.
    """
    metrics = parse_metrics(metrics)
    _check_request(metrics, features, reference, fake_classes)
    num_fake = len(next(iter(f1.values())))
    if num_fake < 2:
        raise MetricsError(f"need at least 2 generated images, got {num_fake}")
    weights = resolve_inception_weights(inception_weights) if features == "inception" else None
    kw = fidelity_kwargs(torch.device(device), batch_size, features, weights, progress, seed)
    real = None
    if any(m in BINARY for m in metrics):
        real = reference_features(reference, features, kw, fid_statistics="fid" in metrics, labels="ifid" in metrics)
    return scores_from_features(f1, metrics, features, real, kw, fake_labels=fake_labels, fake_classes=fake_classes,
                                kid_subset_size=kid_subset_size, isc_splits=isc_splits)


def compute_metrics(fake: torch.Tensor, reference: Reference | None, metrics: Iterable[str], features: str = "fmnist",
                    *, fake_labels: torch.Tensor | None = None, fake_classes: torch.Tensor | None = None,
                    device: str | torch.device = "cpu",
                    batch_size: int = 256, progress: bool = True, inception_weights: str | Path | None = None,
                    seed: int = 2020, kid_subset_size: int = 1000, isc_splits: int = 10) -> dict:
    """Metrics of ``fake`` (uint8 images (N, C, H, W)) against ``reference`` (real images).

    Returns a flat dict: ``is_mean``/``is_std``, ``fid``, ``kid_mean``/``kid_std``,
    ``precision``/``recall``/``f_score``, ``class_accuracy`` and ``per_class_accuracy`` (fmnist
    features with ``fake_labels``), ``ifid`` and ``per_class_fid`` (with ``fake_classes``, the
    images' classes as the reference numbers them; default ``fake_labels``), plus ``num_fake``,
    ``num_real`` and ``kid_subset_size`` where they apply.
    """
    metrics = parse_metrics(metrics)
    fake_classes = fake_labels if fake_classes is None else fake_classes
    _check_request(metrics, features, reference, fake_classes)
    if fake.dtype != torch.uint8:
        raise MetricsError("compute_metrics takes uint8 images; convert [-1, 1] floats with "
                           "sagan.data.datasets.to_uint8")
    if len(fake) < 2:
        raise MetricsError(f"need at least 2 generated images, got {len(fake)}")
    class_acc = features == "fmnist" and fake_labels is not None
    common = dict(device=device, batch_size=batch_size, progress=progress, inception_weights=inception_weights, seed=seed)
    f1 = extract_features(fake, fake_feature_layers(metrics, features, class_acc), features, **common)
    return metrics_from_features(f1, reference, metrics, features, fake_labels=fake_labels if class_acc else None,
                                 fake_classes=fake_classes, kid_subset_size=kid_subset_size, isc_splits=isc_splits,
                                 **common)


def gather_features(f1: dict[str, torch.Tensor], dist) -> dict[str, torch.Tensor] | None:
    """Concatenate every process's features in rank order; the whole set on rank 0, None elsewhere.

    Values may also be label tensors. A process with no samples (more processes than sampling
    batches) sends what it has: an empty dict, or empty tensors.
    """
    if dist.world <= 1:
        return f1
    parts = all_gather_objects({k: v.cpu() for k, v in f1.items()}, dist)
    if not dist.is_main:
        return None
    keys = list(parts[0])  # rank 0 always has samples: the first batch is its
    return {k: torch.cat([p[k] for p in parts if k in p]) for k in keys}


def real_split_metrics(reference: Reference, other: Reference, metrics: Iterable[str] = METRICS,
                       features: str = "fmnist", **kwargs) -> dict:
    """Metrics of one real split (``other``, e.g. test) treated as samples against ``reference``.

    The baseline a generator's numbers should be read against: what perfect samples would score.
    """
    images, labels = other.load()
    return compute_metrics(images, reference, metrics, features, fake_labels=labels, **kwargs)

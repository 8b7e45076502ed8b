"""Per-class numbers: the classifier's accuracy per class and the intra-class FID (iFID).

iFID is PyTorch-StudioGAN's: for every class, the FID between the generated images of that class
and the real images of that class (the same extractor and layer as FID), then the plain mean over
the classes. StudioGAN generates as many images per class as the training set has; here each class
has the generated images given (``sagan evaluate`` spreads ``-n`` evenly over the classes) and all
the reference's images of the class. FID is biased upwards by small sample counts, the more so
the wider the features (128 for the Fashion-MNIST classifier, 2048 for Inception): compare iFIDs
only at the same counts.

Class indices are the reference's: the caller maps the generated images' classes onto them first.
"""
from __future__ import annotations

import torch

from sagan.errors import MetricsError

MIN_PER_CLASS = 2  # a covariance needs two images


def class_counts(labels: torch.Tensor) -> dict[int, int]:
    """{class index: images of that class}, classes in increasing order."""
    values, counts = torch.unique(labels.long(), return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts, strict=False)}


def per_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> dict[int, float]:
    """{class: fraction of the images generated for it that the classifier assigns to it}."""
    predicted, labels = predicted.long().cpu(), labels.long().cpu()
    return {c: float((predicted[labels == c] == c).double().mean()) for c in class_counts(labels)}


def intra_class_fids(fake: torch.Tensor, fake_classes: torch.Tensor, real: torch.Tensor,
                     real_classes: torch.Tensor) -> dict[int, float]:
    """{class: FID between the generated and the real features of that class}, for every class the
    generated images have. ``fake`` (N, D) and ``real`` (M, D) are features at the FID layer; the
    classes are indices in the reference's classes. MetricsError when a class has fewer than two
    images on either side (no covariance), naming the classes."""
    # torch-fidelity's FID maths (the eval extra; sagan.metrics.evaluation, the caller, checked it is there)
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    fake_n, real_n = class_counts(fake_classes), class_counts(real_classes)
    short = [f"{c} ({fake_n[c]} generated, {real_n.get(c, 0)} real)" for c in fake_n
             if min(fake_n[c], real_n.get(c, 0)) < MIN_PER_CLASS]
    if short:
        raise MetricsError(f"iFID needs at least {MIN_PER_CLASS} images of every class on both sides; class(es) "
                           f"{', '.join(short)} have fewer")
    fake_classes, real_classes = fake_classes.long().cpu(), real_classes.long().cpu()
    out = {}
    for c in fake_n:
        s1 = fid_features_to_statistics(fake[fake_classes == c].cpu())
        s2 = fid_features_to_statistics(real[real_classes == c].cpu())
        out[c] = float(fid_statistics_to_metric(s1, s2, False)[KEY_METRIC_FID])
    return out

"""One place names metrics (sagan.metrics.naming): stored keys, their titles and labels, as the report,
``sagan evaluate`` and a study's results read them."""
from __future__ import annotations

from sagan.metrics.naming import (
    bare_metric,
    better,
    features_label,
    key_label,
    metric_features,
    metric_key,
    metric_label,
    metric_title,
)


def test_titles_and_labels():
    assert [metric_title(n) for n in ("fid", "eval/best_fid", "is_mean", "class_accuracy", "endpoint_fid",
                                      "d_margin", "kid_subset_size")] \
        == ["FID", "best FID", "IS", "class accuracy", "training-time FID, mean of the last evaluations", "D margin",
            "kid subset size"]
    assert (features_label("inception"), features_label("fmnist")) == ("Inception", "Fashion-MNIST classifier features")
    # the FIDs a study derives are labelled with their features like the feature statistics
    assert metric_label("best_tracked_fid", "inception") == "best training-time FID (Inception)"
    assert metric_label("endpoint_fid", "fmnist") \
        == "training-time FID, mean of the last evaluations (Fashion-MNIST classifier features)"
    # no features: no extractor named; a detail follows the features in the same brackets
    assert metric_label("fid", None) == "FID"
    assert metric_label("fid", "inception", better("fid")) == "FID (Inception; lower is better)"
    assert metric_label("is", None, better("is")) == "IS (higher is better)"
    assert metric_label("minutes", "fmnist", "training") == "wall minutes per run (training)"
    assert [better(n) for n in ("fid", "eval/best_fid", "kid_mean", "endpoint_fid", "is_mean", "recall")] \
        == ["lower is better"] * 4 + ["higher is better"] * 2


def test_stored_keys_read_back():
    for features in ("inception", "fmnist"):
        for name in ("fid", "kid_mean", "precision", "class_accuracy"):
            key = metric_key(name, features)
            assert bare_metric(key, features) == name
            assert metric_features(key) == ((name, features) if name != "class_accuracy" else None)
    assert bare_metric("class_accuracy", "fmnist") == "class_accuracy"
    assert metric_features("eval/fid") == ("fid", "inception")
    assert metric_features("eval/fid", "fmnist") == ("fid", "fmnist")  # an older run's plain column
    assert key_label("metrics.fid_fmnist") == "FID (Fashion-MNIST classifier features)"
    assert key_label("eval/is_mean") == "IS (Inception)"
    assert key_label("metrics.class_accuracy") == "class accuracy"
    assert key_label("num_fake") is None and key_label("eval/seconds") is None

"""Metrics: sanity of the numbers, agreement with an independent computation, the Inception error path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sagan.config import DataConfig
from sagan.data.datasets import to_uint8
from sagan.metrics import classifier
from sagan.metrics.evaluation import MetricsError, compute_metrics, parse_metrics
from sagan.metrics.extractors import (INCEPTION_ENV, INCEPTION_FILE, InceptionWeightsError, inception_cache_path,
                                      resolve_inception_weights)
from sagan.metrics.reference import reference_for

FMNIST = DataConfig(dataset="fashion_mnist")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private statistics cache for this module (the user's cache is never touched)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGAN_CACHE", str(tmp_path_factory.mktemp("sagan_cache")))
        yield


@pytest.fixture(scope="module")
def train_ref(cache):
    return reference_for(FMNIST, 32, 1, "train", num_images=2000, progress=False)


@pytest.fixture(scope="module")
def test_split(cache):
    return reference_for(FMNIST, 32, 1, "test", progress=False).load()


def _features(images_uint8: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and logits, computed directly with the classifier (no torch-fidelity)."""
    model = classifier.load_classifier()
    with torch.no_grad():
        feats, logits = zip(*(model.features_and_logits(classifier.prepare_input(images_uint8[i:i + 500]))
                              for i in range(0, len(images_uint8), 500)))
    return torch.cat(feats).double().numpy(), torch.cat(logits).double().numpy()


def _fid_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """FID in float64 with tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix, so eigh
    is exact to rounding even when the covariances are singular (dead ReLU units)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def _fid_tolerance(a: np.ndarray, b: np.ndarray) -> float:
    """How far torch-fidelity's FID may be from _fid_numpy: it takes tr sqrt(S1 S2) from the
    eigenvalues of the non-symmetric product, each off by up to ~d * eps64 * ||S1|| ||S2||; near zero
    (singular covariances) the square root turns that into sqrt(d * eps64 * ||S1|| ||S2||) per
    eigenvalue, for at most d eigenvalues, and FID counts the trace twice."""
    d = a.shape[1]
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    norms = np.linalg.norm(s1, 2) * np.linalg.norm(s2, 2)
    return 2 * d * np.sqrt(d * np.finfo(np.float64).eps * norms)


def _kid_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, written out."""
    d, m, n = a.shape[1], len(a), len(b)
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def _kid_scale(a: np.ndarray, b: np.ndarray) -> float:
    """The size of the kernel values KID sums: torch-fidelity computes them in float32 (the
    features' dtype), so its KID carries rounding of ~1e-6 of this, not of KID (which is near 0 for
    two samples of the same distribution)."""
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3  # noqa: E731
    return float(max(np.abs(k(a, a)).mean(), np.abs(k(b, b)).mean(), np.abs(k(a, b)).mean()))


def test_fid_kid_equal_independent_computation(cache, test_split):
    fake = test_split[0][:600]
    ref600 = reference_for(FMNIST, 32, 1, "train", num_images=600, progress=False)
    real = ref600.load()[0]
    ours = compute_metrics(fake, ref600, ["fid", "kid"], "fmnist", progress=False)
    fa, _ = _features(fake)
    fb, _ = _features(real)
    assert ours["num_fake"] == 600 and ours["num_real"] == 600 and ours["kid_subset_size"] == 600
    assert ours["fid"] == pytest.approx(_fid_numpy(fa, fb), abs=_fid_tolerance(fa, fb))
    # KID on one subset of all 600 features equals the full unbiased estimate (it is permutation-invariant).
    # float32 kernel sums of 600^2 terms (pairwise summation): relative error < 1e-5 of the kernel scale.
    scale = _kid_scale(fa, fb)
    assert ours["kid_mean"] == pytest.approx(_kid_numpy(fa, fb), abs=1e-5 * scale)
    assert ours["kid_std"] <= 1e-5 * scale  # the subsets differ only in the order of the sums


def test_classifier_is_matches_independent_computation(test_split):
    fake = test_split[0][:1000]
    ours = compute_metrics(fake, None, ["is"], "fmnist", progress=False)
    _, logits = _features(fake)
    # torch-fidelity shuffles with RandomState(2020) and splits into 10 chunks
    logits = logits[np.random.RandomState(2020).permutation(len(logits))]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for chunk in np.array_split(p, 10):
        q = chunk.mean(0, keepdims=True)
        scores.append(np.exp((chunk * (np.log(chunk) - np.log(q))).sum(1).mean()))
    assert ours["is_mean"] == pytest.approx(float(np.mean(scores)), rel=1e-3)


def test_real_splits_give_small_fid_noise_and_one_image_large(train_ref, test_split):
    images = test_split[0][:1000]
    real = compute_metrics(images, train_ref, ["fid", "kid", "pr"], "fmnist", progress=False)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, images.shape, dtype=torch.uint8, generator=gen)
    noisy = compute_metrics(noise, train_ref, ["fid", "kid", "pr"], "fmnist", progress=False)
    one = compute_metrics(images[:1].expand(1000, -1, -1, -1).contiguous(), train_ref, ["fid", "pr"], "fmnist",
                          progress=False)
    assert real["fid"] * 20 < noisy["fid"] and real["fid"] * 20 < one["fid"]
    assert real["kid_mean"] * 20 < noisy["kid_mean"]
    assert real["precision"] > 0.6 and real["recall"] > 0.6
    assert noisy["precision"] < 0.1
    assert one["recall"] < 0.1  # one image covers almost none of the real data


def test_real_test_split_is_near_ten_and_class_accuracy_is_the_classifier_accuracy(test_split):
    images, labels = test_split
    out = compute_metrics(images, None, ["is"], "fmnist", fake_labels=labels, progress=False)
    info = classifier.classifier_info()
    assert out["class_accuracy"] >= 0.90
    # Accuracy moves in steps of 1/n: the stored number (measured on another CPU) and this one may
    # differ only by the test images whose two top logits are tied to float32 rounding (another
    # kernel order can flip their argmax); count them rather than guess.
    _, logits = _features(images)
    top2 = np.sort(logits, axis=1)[:, -2:]
    ties = int((top2[:, 1] - top2[:, 0] <= 1e-4 * np.maximum(1.0, np.abs(top2[:, 1]))).sum())
    n = len(labels)
    assert abs(out["class_accuracy"] - info["test_accuracy"]) * n <= ties + 0.5, ties
    assert 8.0 < out["is_mean"] <= 10.0


def test_rgb_and_other_sizes_are_converted(test_split):
    grey = test_split[0][:300]
    rgb = grey.expand(-1, 3, -1, -1).contiguous()
    a = compute_metrics(grey, None, ["is"], "fmnist", progress=False)
    b = compute_metrics(rgb, None, ["is"], "fmnist", progress=False)
    assert a["is_mean"] == pytest.approx(b["is_mean"], rel=1e-4)
    big = torch.nn.functional.interpolate(grey.float(), size=64, mode="nearest").round().to(torch.uint8)
    c = compute_metrics(big, None, ["is"], "fmnist", progress=False)
    assert c["is_mean"] == pytest.approx(a["is_mean"], rel=0.05)


def test_reference_statistics_are_cached(train_ref, test_split, monkeypatch):
    compute_metrics(test_split[0][:200], train_ref, ["fid"], "fmnist", progress=False)
    ref = reference_for(FMNIST, 32, 1, "train", num_images=2000, progress=False)

    def no_loading():
        raise AssertionError("reference images were loaded although their statistics are cached")
    monkeypatch.setattr(ref, "_loader", no_loading)
    out = compute_metrics(test_split[0][:200], ref, ["fid", "kid"], "fmnist", progress=False)
    assert out["num_real"] == 2000


def test_to_uint8_and_metric_names():
    x = torch.tensor([-1.0, -0.999, 0.0, 1.0, 2.0]).view(1, 1, 1, 5)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255]
    assert parse_metrics("fid, is") == ["is", "fid"]
    with pytest.raises(MetricsError, match="choose from"):
        parse_metrics("fid,ssim")
    with pytest.raises(MetricsError, match="reference"):
        compute_metrics(torch.zeros(4, 1, 32, 32, dtype=torch.uint8), None, ["fid"], "fmnist", progress=False)


def test_metric_keys_name_the_extractor_unless_it_is_inception():
    """Classifier-feature numbers can never be read as Inception numbers: their keys carry the extractor."""
    from sagan.metrics.naming import metric_key, metric_keys, metric_label
    raw = {"is_mean": 1.0, "is_std": 2.0, "fid": 3.0, "kid_mean": 4.0, "kid_std": 5.0, "precision": 0.5,
           "recall": 0.25, "f_score": 0.3, "class_accuracy": 0.9}
    assert metric_keys(raw, "inception") == raw
    assert metric_keys(raw, "fmnist") == {
        "is_mean_fmnist": 1.0, "is_std_fmnist": 2.0, "fid_fmnist": 3.0, "kid_mean_fmnist": 4.0, "kid_std_fmnist": 5.0,
        "precision_fmnist": 0.5, "recall_fmnist": 0.25, "f_score_fmnist": 0.3, "class_accuracy": 0.9}
    # training-time scalars: the prefix is kept, the rule is the same
    assert [metric_key(k, "fmnist") for k in ("eval/fid", "eval/best_fid", "eval/is", "eval/class_acc", "eval/seconds")] \
        == ["eval/fid_fmnist", "eval/best_fid_fmnist", "eval/is_fmnist", "eval/class_acc", "eval/seconds"]
    assert [metric_key(k, "inception") for k in ("eval/fid", "eval/best_fid", "eval/is")] \
        == ["eval/fid", "eval/best_fid", "eval/is"]
    assert metric_label("fid", "inception") == "FID (Inception)"
    assert metric_label("fid", "fmnist") == "FID (Fashion-MNIST classifier features)"
    assert metric_label("kid_mean", "fmnist") == "KID (Fashion-MNIST classifier features)"
    assert metric_label("class_accuracy", "fmnist") == "class accuracy"


def test_training_fid_names_its_scalars_for_the_extractor(tiny_folder):
    from sagan.config import load_config
    from sagan.data import load_data
    from sagan.metrics.tracking import TrainingFID
    cfg = load_config("fmnist32", overrides=["data.dataset=image_folder", f"data.root={tiny_folder}",
                                             "train.fid_features=fmnist", "train.fid_every=1"])
    fid = TrainingFID(cfg, load_data(cfg.data, 32, True), torch.device("cpu"))
    assert (fid.features, fid.fid_key, fid.best_fid_key) == ("fmnist", "eval/fid_fmnist", "eval/best_fid_fmnist")


# --------------------------------------------------------------------------- Inception weights lookup

def test_missing_inception_weights_name_the_file_and_where(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(dst, timeout):
        raise OSError("network is unreachable")
    monkeypatch.setattr("sagan.metrics.extractors._download", offline)
    monkeypatch.setattr("sagan.metrics.inception_offline.fid_helper_model_file", lambda: None)  # nor the offline extra
    with pytest.raises(InceptionWeightsError) as e:
        resolve_inception_weights()
    msg = str(e.value)
    assert INCEPTION_FILE in msg and str(tmp_path / "hub" / "checkpoints" / INCEPTION_FILE) in msg
    assert "--inception-weights" in msg and INCEPTION_ENV in msg and "network is unreachable" in msg


def test_inception_weights_from_path_env_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    with pytest.raises(InceptionWeightsError, match="--inception-weights points to .*does not exist"):
        resolve_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(InceptionWeightsError, match=f"\\${INCEPTION_ENV} points to"):
        resolve_inception_weights()
    given = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, given)  # read as data when found: a plain tensor file
    monkeypatch.setenv(INCEPTION_ENV, str(given))
    assert resolve_inception_weights() == given
    monkeypatch.delenv(INCEPTION_ENV)
    cached = inception_cache_path()
    cached.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, cached)
    assert resolve_inception_weights(download=False) == cached


def test_classifier_training_is_reproducible_from_its_seed(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 1, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(256) % 10
    runs = []
    for name in ("a.pt", "b.pt"):
        res = classifier.train_classifier(images, labels, images[:64], labels[:64], out=tmp_path / name, seed=3,
                                          epochs=1, batch_size=64, log=lambda s: None)
        runs.append(torch.load(res.path, weights_only=True))
    assert runs[0]["info"]["seed"] == 3
    for k, v in runs[0]["model"].items():
        assert torch.equal(v, runs[1]["model"][k]), k
    assert classifier.load_classifier(tmp_path / "a.pt").head.weight.shape == (10, classifier.FEATURE_DIM)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A weights file with the Inception architecture but random values (the real one cannot be
    downloaded here): exercises the whole Inception code path, not its numbers."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        torch.manual_seed(0)
        model = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow  # Inception at 299x299 on a CPU: about a minute
def test_inception_path_end_to_end(random_inception_weights, tiny_folder, cache):
    ref = reference_for(DataConfig(dataset="image_folder", root=str(tiny_folder)), 32, 3, "train", progress=False)
    gen = torch.Generator().manual_seed(0)
    fake = torch.randint(0, 256, (12, 1, 32, 32), dtype=torch.uint8, generator=gen)  # grey -> RGB for Inception
    out = compute_metrics(fake, ref, ["is", "fid", "kid", "pr"], "inception", progress=False, batch_size=8,
                          inception_weights=random_inception_weights, isc_splits=2)
    assert out["num_fake"] == 12 and out["num_real"] == 16 and out["kid_subset_size"] == 12
    for key in ("is_mean", "fid", "kid_mean", "precision", "recall"):
        assert np.isfinite(out[key]), key
    assert out["fid"] >= 0 and out["is_mean"] >= 1 - 1e-9  # random weights: near-constant features

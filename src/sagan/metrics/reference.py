"""Real images to compare against, loaded lazily and named for the statistics cache.

Reference features and FID statistics are cached under ``<sagan cache>/stats/``
(``$SAGAN_CACHE`` or ``~/.cache/sagan-torch``), one file per (dataset, split, resolution,
channels, image count, extractor and its weights): the names are made by :func:`cache_name`,
:meth:`Reference.features_cache_name` and :func:`cache_files`. A cache hit never loads the
images at all. The files are plain tensors, written and read here, never by torch-fidelity
(which would unpickle them with ``weights_only=False``, running any code a file names): a file
that is not plain tensors of the expected shapes is refused in one line (:class:`DataError`).

Two kinds of reference: :func:`reference_for` (a split of a run's dataset, for ``sagan
evaluate``) and :func:`training_reference` (the training images a run has already loaded, for
FID during training).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sagan.config import DataConfig
from sagan.data.datasets import DATASETS, ImageData, cache_dir, dataset_spec, load_data, to_uint8
from sagan.errors import DataError, plural
from sagan.fileio import NotPlainTensors, atomic_path, load_plain_tensors
from sagan.metrics.extractors import FIDELITY_NAMES, extractor_id

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


def stats_dir() -> Path:
    return cache_dir() / "stats"


# --------------------------------------------------------------------------- the statistics cache

def cache_files(features_cache_name: str, features: str, layer: str) -> tuple[Path, Path]:
    """(features file, FID statistics file) of a reference's ``features`` at ``layer``.

    The features file has the name torch-fidelity gave it (its content was already a plain
    tensor); the statistics file has a name of its own, since torch-fidelity's held numpy arrays.
    """
    prefix = stats_dir() / f"{features_cache_name}-{FIDELITY_NAMES[features]}"
    return Path(f"{prefix}-features-{layer}.pt"), Path(f"{prefix}-stat-fid-{layer}.tensors.pt")


def _refuse(path: Path, what: str) -> DataError:
    return DataError(f"statistics cache file {path} {what}; delete it and it is recomputed")


def _read_cache_file(path: Path):
    try:
        return load_plain_tensors(path)
    except NotPlainTensors as e:
        raise _refuse(path, str(e)) from None


def read_cached_features(path: Path, layer: str) -> torch.Tensor | None:
    """The cached (N, D) features in ``path``, None when there are none; DataError when the file is
    not a plain tensor of that form (a damaged or foreign file)."""
    if not path.is_file():
        return None
    x = _read_cache_file(path)
    width = int(layer) if layer.isdigit() else None
    if not (isinstance(x, torch.Tensor) and x.dim() == 2 and x.is_floating_point() and len(x) >= 1
            and (width is None or x.shape[1] == width)):
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise _refuse(path, f"does not hold features at layer {layer} (a float tensor (N, {width or 'D'}); "
                            f"it holds {got})")
    if not torch.isfinite(x).all():
        raise _refuse(path, "holds non-finite features")
    return x


def read_cached_statistics(path: Path, dim: int) -> dict[str, torch.Tensor] | None:
    """The cached FID statistics (``mu`` (D,), ``sigma`` (D, D)) in ``path``, None when there are
    none; DataError when the file is not plain tensors of that form."""
    if not path.is_file():
        return None
    s = _read_cache_file(path)
    ok = (isinstance(s, dict) and set(s) == {"mu", "sigma"} and all(isinstance(v, torch.Tensor) for v in s.values())
          and s["mu"].shape == (dim,) and s["sigma"].shape == (dim, dim)
          and all(v.is_floating_point() and torch.isfinite(v).all() for v in s.values()))
    if not ok:
        raise _refuse(path, f"does not hold FID statistics of {dim} features (a dict of finite tensors "
                            f"mu ({dim},) and sigma ({dim}, {dim}))")
    return s


def write_cache_file(path: Path, value) -> None:
    """Save ``value`` (tensors) to the cache, atomically; a failure is reported, not raised (a cache is optional)."""
    try:
        with atomic_path(path) as tmp:
            torch.save(value, tmp)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch's zip writer on a full disk
        first = (str(e).splitlines() or [""])[0]
        log.warning(f"note: could not write the statistics cache file {path} ({type(e).__name__}: {first}); "
                    "it is recomputed next time")


class ImageTensorDataset(Dataset):
    """uint8 images (N, C, H, W) as a torch-fidelity input, optionally grey -> RGB."""

    def __init__(self, images: torch.Tensor, channels: int | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.channels = images, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.images[i]
        if self.channels == 3 and x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return x


class LazyImageDataset(ImageTensorDataset):
    """Like :class:`ImageTensorDataset`, but the images are loaded on first use."""

    def __init__(self, load: Callable[[], torch.Tensor], channels: int | None = None):  # noqa: D107
        self._load, self.channels, self._images = load, channels, None

    @property
    def images(self) -> torch.Tensor:  # type: ignore[override]
        if self._images is None:
            self._images = self._load()
        return self._images


def cache_name(dataset: str, split: str, resolution: int, channels: int, count: str,
               folder: Path | None = None) -> str:
    """The statistics-cache name of a reference's images (without the extractor).

    ``count`` is ``"all"`` for a whole split, else how the images were chosen (``n2000-s0``: a
    seeded subset). An image folder (``folder``) is named by a digest of its path and file list,
    so that changing the folder invalidates the cache.
    """
    where = dataset if folder is None else f"{dataset}-{_folder_digest(folder)}"
    return f"{where}-{split}-{resolution}px-{channels}ch-{count}"


@dataclass
class Reference:
    """The real side of a comparison: how to get its images, and the cache name of their features."""
    dataset: str
    split: str
    resolution: int
    channels: int
    num_images: int | None  # None: the whole split
    cache_name: str
    description: str
    _loader: Callable[[], tuple[torch.Tensor, torch.Tensor | None]] = field(repr=False, default=None)  # type: ignore[assignment]
    _loaded: tuple[torch.Tensor, torch.Tensor | None] | None = field(repr=False, default=None)

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 images (N, C, R, R) and labels (or None)."""
        if self._loaded is None:
            self._loaded = self._loader()
        return self._loaded

    def dataset_for(self, channels: int | None) -> LazyImageDataset:
        return LazyImageDataset(lambda: self.load()[0], channels)

    def features_cache_name(self, features: str) -> str:
        """The cache name of these images' ``features`` ('inception' or 'fmnist', with its weights' digest)."""
        return f"{self.cache_name}-{extractor_id(features)}"


def _subsample(images: torch.Tensor, labels: torch.Tensor | None, n: int | None, seed: int):
    if n is None or n >= len(images):
        return images, labels
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images[idx], (labels[idx] if labels is not None else None)


def _folder_images(data: ImageData, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(data.folder, batch_size=256, shuffle=False, num_workers=0)
    xs, ys = [], []
    for x, y in tqdm(loader, disable=not progress, desc="read real images", unit="batch", leave=False):
        xs.append(to_uint8(x))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _folder_digest(root: Path) -> str:
    h = hashlib.sha1(str(root.resolve()).encode())
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:10]


def reference_for(data_cfg: DataConfig, resolution: int, channels: int, split: str = "train",
                  num_images: int | None = None, seed: int = 0, progress: bool = True) -> Reference:
    """The real images of ``data_cfg``'s dataset at ``resolution`` with ``channels`` channels.

    Raises ``DataError`` for an unknown split or a split the dataset does not have.
    """
    if split not in SPLITS:
        raise DataError(f"reference split {split!r} is not known; choose one of {list(SPLITS)}")
    if num_images is not None and num_images < 2:
        raise DataError(f"the reference needs at least 2 images, got {num_images}")
    dataset = data_cfg.dataset
    spec = dataset_spec(dataset)
    cfg = DataConfig(dataset=dataset, root=data_cfg.root, channels=channels, download=data_cfg.download, num_workers=0)
    if split not in spec.splits:
        raise DataError(f"{spec.title} has no {split} split; use --split train (the training images)")
    folder = None
    if not spec.in_memory:
        if cfg.root is None or not Path(cfg.root).expanduser().is_dir():
            raise DataError(f"the run's image folder {cfg.root!r} is not there; pass --data PATH to where it is now")
        folder = Path(cfg.root).expanduser()

    def loader():
        data = load_data(cfg, resolution, conditional=True, train=(split == "train"), progress=progress)
        if data.images is not None:
            images, labels = data.images, data.labels
        else:
            images, labels = _folder_images(data, progress)
        return _subsample(images, labels, num_images, seed)

    count = "all" if num_images is None else f"n{num_images}-s{seed}"
    name = cache_name(dataset, split, resolution, channels, count, folder)
    desc = f"{dataset} {split} split at {resolution}x{resolution}, {plural(channels, 'channel')}" + (
        f", {plural(num_images, 'image')} (seed {seed})" if num_images is not None else ", all images")
    return Reference(dataset, split, resolution, channels, num_images, name, desc, loader)


def training_reference(data: ImageData, resolution: int) -> Reference:
    """The training images a run has already loaded (``data``), as a cacheable reference.

    The whole standard training split shares its cache entry with ``sagan evaluate --split train``.
    """
    if data.images is not None:
        images, labels = data.images, data.labels
        loader = lambda: (images, labels)  # noqa: E731
        folder = None
    else:
        loader = lambda: _folder_images(data, progress=False)  # noqa: E731
        folder = Path(getattr(data.folder, "root", "."))
    spec = DATASETS.get(data.name)  # None for data built in code under a name of its own
    count = "all" if spec is not None and spec.train_size == len(data) else f"n{len(data)}"
    name = cache_name(data.name, "train", resolution, data.channels, count, folder)
    return Reference(data.name, "train", resolution, data.channels, None, name,
                     f"{data.name} training images at {resolution}x{resolution}", loader)

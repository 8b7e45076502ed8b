"""Datasets: Fashion-MNIST, CIFAR-10 and image folders, resized to the model's resolution.

Every loader returns an ``ImageData``: images as uint8 tensors (N, C, R, R) held in memory for
the small standard datasets, or a torchvision ``ImageFolder`` streamed through a DataLoader for
folders of arbitrary size. Pixel values reach the models in [-1, 1].
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from sagan.data.augment import check_augment_config
from sagan.errors import ConfigError, DataError, plural
from sagan.fileio import atomic_path
from sagan.schema import DataConfig

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SCAN_PROGRESS_MIN = 1000  # show a progress bar when scanning at least this many files
log = logging.getLogger("sagan.data")


@dataclass
class ImageData:
    """A dataset ready for training: images, labels, and what they are."""
    name: str
    source: str  # human-readable: where the data came from
    num_classes: int  # 0 for unlabelled / unconditional data
    channels: int
    resolution: int
    class_names: list[str] = field(default_factory=list)
    images: torch.Tensor | None = None  # uint8 (N, C, R, R) when held in memory
    labels: torch.Tensor | None = None  # int64 (N,)
    folder: Dataset | None = None  # streamed dataset yielding (float image in [-1, 1], label)

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.folder)  # type: ignore[arg-type]


def cache_dir() -> Path:
    root = os.environ.get("SAGAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sagan-torch")
    return Path(root)


def to_model_range(images_uint8: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 [0, 255] -> [-1, 1] in ``dtype`` (torch's default floating dtype, float32 unless changed)."""
    return images_uint8.to(dtype or torch.get_default_dtype()).div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (any float dtype) -> uint8 [0, 255], rounded to nearest; the inverse of to_model_range."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _resize_uint8(images: torch.Tensor, resolution: int, chunk: int = 4096) -> torch.Tensor:
    """Resize + center-crop a uint8 (N, C, H, W) tensor to (N, C, R, R) with antialiasing."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images.contiguous()
    tf = v2.Compose([v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution)])
    return torch.cat([tf(images[i:i + chunk]) for i in range(0, len(images), chunk)])


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and images.shape[1] == 3:
        return v2.functional.rgb_to_grayscale(images)
    raise DataError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")


# --------------------------------------------------------------------------- Fashion-MNIST

def fmnist_files(folder: Path) -> dict[str, Path]:
    """The Fashion-MNIST IDX files (.gz or not) in ``folder`` or its torchvision layout
    ``folder/FashionMNIST/raw/``, by name; fewer than four when some are missing."""
    found = {}
    for name in FMNIST_FILES:
        for cand in (folder / name, folder / (name + ".gz"), folder / "FashionMNIST" / "raw" / name,
                     folder / "FashionMNIST" / "raw" / (name + ".gz")):
            if cand.is_file():
                found[name] = cand
                break
    return found


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def detect_folder_dataset(root: str | os.PathLike, max_entries: int = 10_000) -> str | None:
    """What a ``--data`` folder holds, by its layout alone (no image is opened):
    ``"fashion_mnist"`` (the four IDX files, flat or torchvision's ``FashionMNIST/raw/``),
    ``"cifar10"`` (torchvision's ``cifar-10-batches-py/``), ``"image_folder"`` (image files directly
    in it or in its sub-folders), or None (missing, empty or anything else).

    Cheap: stops at the first image file and looks at no more than ``max_entries`` directory entries.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    if len(fmnist_files(root)) == len(FMNIST_FILES):
        return "fashion_mnist"
    if (root / "cifar-10-batches-py").is_dir():
        return "cifar10"
    seen = 0
    for dirpath, dirnames, fnames in os.walk(root, followlinks=True):  # unreadable folders are skipped
        if any(_is_image_name(f) for f in fnames):
            return "image_folder"
        seen += len(fnames) + len(dirnames)
        depth = len(Path(dirpath).relative_to(root).parts)  # 0: the root, 1: a class folder
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < 2 else []
        if seen >= max_entries:
            break
    return None


def _fmnist_root(cfg: DataConfig) -> tuple[Path, str]:
    """A torchvision-layout root holding FashionMNIST/raw/<idx files>, and where it came from."""
    target = cache_dir() / "datasets"
    raw = target / "FashionMNIST" / "raw"

    def stage_from(folder: Path) -> bool:
        found = fmnist_files(folder)
        if len(found) != len(FMNIST_FILES):
            return False
        raw.mkdir(parents=True, exist_ok=True)
        for name, src in found.items():
            dst = raw / name
            if dst.is_file() and dst.stat().st_size > 0:
                continue
            opener = gzip.open if src.suffix == ".gz" else open
            with atomic_path(dst) as tmp, opener(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        return True

    if cfg.root is not None:
        root = Path(cfg.root).expanduser()
        if not root.exists():
            raise DataError(f"data.root {str(root)!r} does not exist")
        if stage_from(root):
            return target, f"Fashion-MNIST IDX files from {root}"
        # A folder given is the data: never replaced by the cache or a download (issue 26).
        images = (" It holds image files: read it as an image folder with --set data.dataset=image_folder."
                  if detect_folder_dataset(root) == "image_folder" else
                  " Nor image files: a folder of images (directly in it or in class sub-folders) is read as an "
                  "image folder.")
        raise DataError(f"no Fashion-MNIST IDX files ({', '.join(FMNIST_FILES)}, optionally .gz) "
                        f"found in {str(root)!r}.{images}")
    elif DEBIAN_FMNIST.is_dir() and stage_from(DEBIAN_FMNIST):
        return target, f"Fashion-MNIST from the Debian package dataset-fashion-mnist ({DEBIAN_FMNIST})"
    if raw.is_dir() and all((raw / n).is_file() for n in FMNIST_FILES):
        return target, f"Fashion-MNIST from the cache {raw}"
    if cfg.download:
        try:
            torchvision.datasets.FashionMNIST(str(target), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(target), train=False, download=True)
            return target, f"Fashion-MNIST downloaded by torchvision into {target}"
        except Exception as e:  # noqa: BLE001 - any network failure becomes one clear message
            reason = f"download failed ({type(e).__name__}: {e})"
    else:
        reason = "download is off (data.download=false)"
    raise DataError(
        "Fashion-MNIST not found: looked in "
        f"{DEBIAN_FMNIST} and the cache {raw}; {reason}.\n"
        "Get it with one of:\n"
        "  apt-get install dataset-fashion-mnist        (Debian/Ubuntu, offline-friendly)\n"
        "  sagan train --data DIR   with DIR holding the four IDX files (.gz or not)\n"
        "  an internet connection, so torchvision can download it")


def load_fashion_mnist(cfg: DataConfig, resolution: int, train: bool = True) -> ImageData:
    root, source = _fmnist_root(cfg)
    ds = torchvision.datasets.FashionMNIST(str(root), train=train, download=False)
    images = ds.data.unsqueeze(1)  # (N, 1, 28, 28) uint8
    channels = cfg.channels or 1
    images = _match_channels(_resize_uint8(images, resolution), channels)
    return ImageData("fashion_mnist", source, 10, channels, resolution, list(FMNIST_CLASSES),
                     images=images, labels=ds.targets.long())


# --------------------------------------------------------------------------- CIFAR-10

def load_cifar10(cfg: DataConfig, resolution: int, train: bool = True) -> ImageData:
    root = Path(cfg.root).expanduser() if cfg.root else cache_dir() / "datasets"
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
        source = f"CIFAR-10 from {root}"
    except RuntimeError:
        if cfg.root and detect_folder_dataset(root) == "image_folder":  # never download into the user's images
            raise DataError(f"CIFAR-10 not found in {str(root)!r} (expected cifar-10-batches-py/ there); it holds "
                            "image files: read it as an image folder with --set data.dataset=image_folder") from None
        if not cfg.download:
            raise DataError(f"CIFAR-10 not found in {str(root)!r} (expected cifar-10-batches-py/ there) "
                            "and data.download=false") from None
        try:
            ds = torchvision.datasets.CIFAR10(str(root), train=train, download=True)
            source = f"CIFAR-10 downloaded by torchvision into {root}"
        except Exception as e:  # noqa: BLE001
            raise DataError(f"CIFAR-10 not found in {str(root)!r} and the download failed "
                            f"({type(e).__name__}: {e}). Put the extracted cifar-10-batches-py/ "
                            "folder there and pass --data to its parent.") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    channels = cfg.channels or 3
    images = _match_channels(_resize_uint8(images, resolution), channels)
    return ImageData("cifar10", source, 10, channels, resolution, list(ds.classes),
                     images=images, labels=torch.tensor(ds.targets, dtype=torch.long))


# --------------------------------------------------------------------------- image folders

def to_pil_mode(im: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL image to ``mode`` ("RGB" or "L") without the usual pitfalls.

    16-bit and 32-bit integer images are rescaled (PIL's own conversion clips them to 255),
    float images are read as [0, 1] (or [0, 255] when larger), transparency is composited onto
    white, and the EXIF orientation is applied.
    """
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to drop the pixels
        pass
    if im.mode.startswith("I") or im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            top = 1.0 if arr.size == 0 or np.nanmax(arr) <= 1.0 else 255.0
        else:
            top = 65535.0 if im.mode.startswith("I;16") or (arr.size and arr.max() > 255) else 255.0
        arr = np.nan_to_num(arr / top * 255.0, nan=0.0).clip(0, 255).round().astype(np.uint8)
        im = Image.fromarray(arr, mode="L")
    elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im if im.mode == mode else im.convert(mode)


class _ToMode:
    """Picklable transform (DataLoader workers) wrapping ``to_pil_mode``."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, im: Image.Image) -> Image.Image:
        return to_pil_mode(im, self.mode)


def open_image(path: str) -> Image.Image:
    """The ImageFolder loader: the decoded image in its own mode (conversion is the transform's job)."""
    try:
        with open(path, "rb") as f:
            im = Image.open(f)
            im.load()
            return im
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path} passed the start-up scan but cannot be read now ({type(e).__name__}: {e}); "
                        "was the folder changed during training? Remove the file and resume.") from None


def is_greyscale(im: Image.Image) -> bool:
    """Does the image hold grey levels only, by its mode (L, 1, LA, 16/32-bit integer, float) or, for
    a palette image, by its palette? An RGB file is colour even when its pixels happen to be grey."""
    if im.mode in ("1", "L", "LA", "La", "F") or im.mode.startswith("I"):
        return True
    if im.mode in ("P", "PA"):
        palette = im.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return False


def check_image(path: str, mode: str = "RGB", size: int = 64) -> tuple[str | None, bool]:
    """Can ``path`` be used? Returns (None or the reason it cannot, whether it is very large).

    Checks the header and checksums (``verify``), then decodes it (JPEGs at reduced size via
    ``draft``, which still reads all the data, so truncation is caught) and converts it to ``mode``.
    """
    reason, large, _ = inspect_image(path, mode, size)
    return reason, large


def inspect_image(path: str, mode: str = "RGB", size: int = 64) -> tuple[str | None, bool, bool]:
    """``check_image``'s answer and whether the image is greyscale (``is_greyscale``; False when unusable)."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)", False, False
        with Image.open(path) as im:
            large = im.width * im.height > (Image.MAX_IMAGE_PIXELS or float("inf"))
            im.verify()
        with Image.open(path) as im:
            im.draft(mode if im.mode in ("RGB", "L") else None, (size, size))
            im.load()
            grey = is_greyscale(im)
            to_pil_mode(im, mode)
        return None, large, grey
    except Image.DecompressionBombError as e:
        return f"too large to decode safely ({e})", False, False
    except UnidentifiedImageError:
        return "not an image file PIL can read", False, False
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return f"corrupt or truncated ({type(e).__name__}: {e})", False, False
    except Exception as e:  # noqa: BLE001 - a broken file must never stop the scan
        return f"unreadable ({type(e).__name__}: {e})", False, False


class _FlatFolder(torch.utils.data.Dataset):
    """The images directly in one folder, unlabelled (label 0): a flat folder is unconditional data.
    ``samples``/``targets``/``classes`` as torchvision's ImageFolder has them."""

    def __init__(self, files: list[str], transform: Callable, loader: Callable):
        self.samples = [(f, 0) for f in files]
        self.targets = [0] * len(files)
        self.classes: list[str] = []
        self.transform, self.loader = transform, loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.loader(self.samples[i][0])), 0


class _ImageFolder(torchvision.datasets.ImageFolder):
    """ImageFolder whose classes are the non-hidden sub-folders (no ``.ipynb_checkpoints`` class)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        return classes, {c: i for i, c in enumerate(classes)}


@dataclass
class FolderScan:
    """What the start-up scan of an image folder found."""
    usable: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    large: list[str] = field(default_factory=list)  # usable, but above PIL's decompression-bomb warning size
    colour: list[str] = field(default_factory=list)  # usable and not greyscale (``is_greyscale``)

    def summary(self, limit: int = 50) -> str:
        lines = [f"  {p}: {why}" for p, why in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)


def _loose_files(root: Path) -> list[str]:
    """The non-hidden files directly in ``root`` (not in its sub-folders), sorted."""
    return sorted(e.path for e in os.scandir(root) if not e.name.startswith(".") and e.is_file())


def scan_image_folder(root: Path, classes: list[str] | None, mode: str = "RGB", progress: bool = True,
                      workers: int | None = None) -> FolderScan:
    """Check every (non-hidden) file under ``root/<class>/`` (``classes=None``: the files directly in
    ``root``, a flat folder); decided before any training starts."""
    files = []
    for cls in classes or []:
        for dirpath, dirnames, fnames in sorted(os.walk(os.path.join(str(root), cls), followlinks=True)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [os.path.join(dirpath, f) for f in sorted(fnames) if not f.startswith(".")]
    if classes is None:
        files = _loose_files(root)
    workers = workers or min(8, os.cpu_count() or 1)
    scan = FolderScan()
    with warnings.catch_warnings():  # large images are counted below instead of warned about one by one
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        from tqdm import tqdm
        bar = tqdm(total=len(files), desc="scanning images", unit="file",
                   disable=not progress or len(files) < SCAN_PROGRESS_MIN)
        with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
            for path, (reason, large, grey) in zip(files, pool.map(lambda p: inspect_image(p, mode), files)):
                bar.update(1)
                if reason is None:
                    scan.usable.append(path)
                    if large:
                        scan.large.append(path)
                    if not grey:
                        scan.colour.append(path)
                else:
                    scan.skipped.append((path, reason))
        bar.close()
    return scan


def _folder_channels(wanted: int | None, scan: FolderScan) -> tuple[int, str]:
    """The channels a folder is read with, and what the start-up line says about them: ``wanted``
    (data.channels) when set, else 1 when every usable image is greyscale and 3 otherwise."""
    if wanted is not None:
        return wanted, ""
    if not scan.colour:
        return 1, "; all greyscale: 1 channel, --set data.channels=3 reads them as RGB"
    if len(scan.colour) < len(scan.usable):
        return 3, (f"; {len(scan.colour)} of {len(scan.usable)} images in colour (e.g. {scan.colour[0]}), "
                   "read with 3 channels")
    return 3, "; colour, read with 3 channels"


def load_image_folder(cfg: DataConfig, resolution: int, conditional: bool = True, progress: bool = True) -> ImageData:
    if cfg.root is None:
        raise DataError("data.dataset=image_folder needs a folder: pass --data PATH "
                        "(sub-folders of PATH are the classes)")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist or is not a directory")
    try:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"image folder {str(root)!r} cannot be read: {e}") from None
    flat = not subdirs  # images directly in the folder: one unlabelled set
    mode = "L" if cfg.channels == 1 else "RGB"  # the scan's check; RGB when the channels are still to be detected
    try:
        scan = scan_image_folder(root, None if flat else [p.name for p in subdirs], mode, progress=progress)
        loose = [] if flat else _loose_files(root)
    except OSError as e:
        raise DataError(f"image folder {str(root)!r} cannot be read: {e}") from None
    if flat and not scan.usable and not scan.skipped:
        raise DataError(f"image folder {str(root)!r} is empty: put images in it (a flat folder is unconditional "
                        f"data) or in {root}/<class_name>/ (sub-folders are the classes)")
    if loose:
        log.warning("%s directly in %s not used: the folder has sub-folders, which are the classes "
                    "(e.g. %s); move them into a class folder, or the sub-folders out, to use them",
                    plural(len(loose), "file"), root, os.path.basename(loose[0]))
    if scan.skipped:
        log.warning("skipped %d of %d files in %s that cannot be used as images:\n%s",
                    len(scan.skipped), len(scan.skipped) + len(scan.usable), root, scan.summary())
    if scan.large:
        log.warning("%s in %s larger than %s pixels (decoding them is slow; consider "
                    "resizing the dataset once), e.g. %s", plural(len(scan.large), "image"), root, Image.MAX_IMAGE_PIXELS,
                    scan.large[0])
    if not scan.usable:
        raise DataError(f"no readable images in {str(root)!r}: {plural(len(scan.skipped), 'file')}, all skipped "
                        "(see the warning above); supported are the formats PIL reads, e.g. "
                        + ", ".join(IMG_EXTENSIONS))
    channels, channels_note = _folder_channels(cfg.channels, scan)
    mode = "RGB" if channels == 3 else "L"
    transform = v2.Compose([
        _ToMode(mode),
        v2.PILToTensor(),
        v2.Resize(resolution, antialias=True),
        v2.CenterCrop(resolution),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.5] * channels, [0.5] * channels),
    ])
    skipped = f", {plural(len(scan.skipped), 'unreadable file')} skipped" if scan.skipped else ""
    skipped += channels_note
    if flat:
        flat_ds = _FlatFolder(scan.usable, transform, open_image)
        source = (f"image folder {root} ({plural(len(flat_ds), 'image')} directly in it, no class sub-folders: "
                  f"unconditional{skipped})")
        return ImageData("image_folder", source, 0, channels, resolution, [], folder=flat_ds)
    usable = set(scan.usable)
    try:
        ds = _ImageFolder(str(root), transform=transform, loader=open_image,
                                              is_valid_file=usable.__contains__, allow_empty=True)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"no images found in {str(root)!r}: {e}") from None
    classes = list(ds.classes)
    counts = np.bincount(np.asarray(ds.targets, dtype=np.int64), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty and conditional and len(classes) > 1:
        log.warning("class folder(s) with no usable image: %s; the model still reserves their labels",
                    ", ".join(empty))
    num_classes = len(classes) if conditional and len(classes) > 1 else 0
    kind = (f"{len(classes)} class folders: class-conditional" if num_classes else
            f"{plural(len(classes), 'class folder')}: unconditional" + ("" if len(classes) == 1 else " (model.conditional=false)"))
    source = f"image folder {root} ({plural(len(ds), 'image')} in {kind}{skipped})"
    return ImageData("image_folder", source, num_classes, channels, resolution,
                     classes if num_classes else [], folder=ds)


# --------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is; adding a dataset is one entry here plus its loader."""
    name: str  # the value of data.dataset
    title: str
    load: Callable[..., ImageData]  # (data config, resolution, conditional, train, progress) -> ImageData
    channels: int | None  # native channels; None: chosen by data.channels (3 by default)
    num_classes: int | None  # None: the folder's class sub-folders
    train_size: int | None  # images in the standard training split; None for folders
    splits: tuple[str, ...]  # splits a reference can be drawn from
    features: str  # the default feature extractor for its metrics: "fmnist" or "inception"

    @property
    def in_memory(self) -> bool:
        """Held in memory as uint8 tensors (a standard dataset), rather than streamed from a folder."""
        return self.train_size is not None


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("fashion_mnist", "Fashion-MNIST",
                lambda cfg, res, cond, train, progress: load_fashion_mnist(cfg, res, train),
                channels=1, num_classes=10, train_size=60_000, splits=("train", "test"), features="fmnist"),
    DatasetSpec("cifar10", "CIFAR-10",
                lambda cfg, res, cond, train, progress: load_cifar10(cfg, res, train),
                channels=3, num_classes=10, train_size=50_000, splits=("train", "test"), features="inception"),
    DatasetSpec("image_folder", "an image folder",
                lambda cfg, res, cond, train, progress: load_image_folder(cfg, res, cond, progress),
                channels=None, num_classes=None, train_size=None, splits=("train",), features="inception"),
)}


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; ``ConfigError`` listing the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"data.dataset={name!r} is not known; choose one of {sorted(DATASETS)}") from None


def check_data_config(d: DataConfig) -> None:
    """ConfigError naming the first ``data`` key that cannot be loaded, in this order: the dataset, the
    channels, the DiffAugment policy (``sagan.data.augment.check_augment_config``), the workers, the root."""
    if d.dataset not in DATASETS:
        raise ConfigError(f"data.dataset={d.dataset!r} is not known; choose one of {list(DATASETS)}")
    if d.channels not in (None, 1, 3):
        raise ConfigError(f"data.channels={d.channels} must be 1, 3 or null (as the data has)")
    check_augment_config(d)
    if not 0 <= d.num_workers <= 256:
        raise ConfigError(f"data.num_workers={d.num_workers} must be between 0 and 256")
    if not (d.root is None or (d.root.strip() != "" and "\0" not in d.root)):
        raise ConfigError(f"data.root={d.root!r} must be a non-empty path without NUL characters")


def load_data(cfg: DataConfig, resolution: int, conditional: bool = True, train: bool = True,
              progress: bool = True) -> ImageData:
    """Load the configured dataset; raises ``DataError`` with a fix when it cannot. ``progress``:
    a progress bar while a large folder is scanned."""
    data = dataset_spec(cfg.dataset).load(cfg, resolution, conditional, train, progress)
    if not conditional:
        data.num_classes = 0
        data.class_names = []
    return data

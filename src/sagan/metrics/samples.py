"""Images to evaluate that were made elsewhere, and real images to compare them with.

``sagan evaluate`` scores a generator's samples, or images that are already on disk (from this
project's ``sagan sample`` or from any other model):

- a folder of image files, read by the training data's folder loader
  (:func:`sagan.data.datasets.load_image_folder`: class sub-folders are the classes, as ``sagan
  sample --format png`` writes them (``03_Dress/seed0042.png``); a flat folder is unlabelled;
  greyscale is detected); every image is resized (shorter side) and centre-cropped to the size of
  the first image file;
- an NPZ file (read with ``allow_pickle=False``) holding the images as ``arr_0`` (``numpy.savez``'s
  first array, the layout of the ADM / guided-diffusion sample and reference batches) or
  ``images`` (``sagan sample``'s NPZ): uint8, (N, H, W, C) or (N, C, H, W), square, C = 1 or 3.
  Class labels, when there are any, are ``labels`` or ``arr_1`` (one integer per image).

:func:`inspect_npz` reads an NPZ's array headers only, so that a wrong file is refused in one line
and the memory it needs is known before anything is loaded. The real side comes from
:func:`sagan.metrics.reference.reference_for`; :func:`folder_reference_config` says which dataset
a ``--reference FOLDER`` holds.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sagan.config import DataConfig
from sagan.data.datasets import (
    FMNIST_CLASSES,
    IMG_EXTENSIONS,
    detect_folder_dataset,
    load_data,
)
from sagan.errors import DataError, plural
from sagan.metrics.reference import _folder_images
from sagan.models.export import CONFIG_NAME, WEIGHTS_NAME
from sagan.runs.folder import RunDir

NPZ_IMAGE_KEYS = ("arr_0", "images")
NPZ_LABEL_KEYS = ("labels", "arr_1")


@dataclass
class SampleImages:
    """Images read from a folder or an NPZ file, as uint8 (N, C, H, W), with their classes if known."""
    images: torch.Tensor
    labels: torch.Tensor | None  # int64 (N,): indices into class_names (a folder) or the file's own (an NPZ)
    class_names: list[str]  # a folder's class sub-folders; [] for an NPZ (its labels are bare indices)
    source: Path
    kind: str  # "folder" | "npz"
    description: str  # one line: what was read
    details: dict = field(default_factory=dict)  # for the JSON record (the NPZ's keys and layout, ...)

    def record(self) -> dict:
        n, c, h, _ = self.images.shape
        return {"source": str(self.source), "kind": self.kind, "num_images": n, "resolution": h, "channels": c,
                "classes": self.class_names or (None if self.labels is None else
                                                sorted({int(v) for v in self.labels.tolist()})),
                **self.details}

    def subset(self, n: int, seed: int) -> SampleImages:
        """A seeded random subset of ``n`` images (in their original order); all when ``n`` >= their number."""
        if n >= len(self.images):
            return self
        idx = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return SampleImages(self.images[idx], None if self.labels is None else self.labels[idx], self.class_names,
                            self.source, self.kind, f"{self.description}; a random {n} of them (seed {seed})",
                            dict(self.details, subset={"num_images": n, "seed": seed}))


def is_image_source(path: str | Path) -> bool:
    """Does ``path`` name images to evaluate (an ``.npz`` file, or a folder of image files that is not a
    run directory or an exported model), rather than a model?"""
    p = Path(path).expanduser()
    if p.is_file():
        return p.suffix.lower() == ".npz"
    if not p.is_dir():
        return False
    run = RunDir(p)
    model_markers = (p / CONFIG_NAME, p / WEIGHTS_NAME, run.checkpoints, run.config)
    return not any(m.exists() for m in model_markers) and detect_folder_dataset(p) == "image_folder"


# --------------------------------------------------------------------------- NPZ files

@dataclass(frozen=True)
class NpzLayout:
    """What an NPZ file's headers say: which arrays hold the images (and labels), and their shape."""
    path: Path
    image_key: str
    layout: str  # "NHWC" | "NCHW"
    count: int
    channels: int
    resolution: int
    label_key: str | None

    @property
    def nbytes(self) -> int:
        return self.count * self.channels * self.resolution ** 2


def _npy_header(zf: zipfile.ZipFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with zf.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here (1.0 and 2.0 are)")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: array {key!r} cannot be read ({e})") from None
    return tuple(shape), dtype


def inspect_npz(path: str | Path) -> NpzLayout:
    """The layout of the images in NPZ file ``path``, from the array headers alone; one-line DataError
    for anything that is not uint8 images (N, H, W, C) or (N, C, H, W), square, with C = 1 or 3."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path} is not an NPZ file (a zip of .npy arrays, as numpy.savez writes): {e}") from None
    with zf:
        keys = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
        key = next((k for k in NPZ_IMAGE_KEYS if k in keys), None)
        if key is None:
            raise DataError(f"{path} has no image array: expected 'arr_0' (numpy.savez's first array, as in the "
                            f"ADM / guided-diffusion batches) or 'images' (sagan sample's NPZ); it holds "
                            f"{', '.join(map(repr, keys)) or 'no arrays'}")
        shape, dtype = _npy_header(zf, key, path)
        what = f"{path}: {key!r} holds {dtype} values, shape {shape}"
        if dtype.hasobject:
            raise DataError(f"{what}: object arrays are refused (reading one would unpickle Python objects); "
                            "save the images as a uint8 array")
        if dtype != np.uint8:
            raise DataError(f"{what}; images must be uint8 (0-255); convert floats in [-1, 1] with "
                            "((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8)")
        if len(shape) == 4 and shape[3] in (1, 3) and shape[1] == shape[2]:
            layout, channels, resolution = "NHWC", shape[3], shape[1]
        elif len(shape) == 4 and shape[1] in (1, 3) and shape[2] == shape[3]:
            layout, channels, resolution = "NCHW", shape[1], shape[2]
        else:
            raise DataError(f"{what}; images must be (N, H, W, C) or (N, C, H, W), square, with C = 1 or 3")
        if shape[0] < 1 or resolution < 1:
            raise DataError(f"{what}: it holds no images")
        label_key = None
        for lk in (k for k in NPZ_LABEL_KEYS if k in keys):
            lshape, ldtype = _npy_header(zf, lk, path)
            if lshape == (0,) or (lk == "arr_1" and (lshape != (shape[0],) or ldtype.kind not in "iu")):
                continue  # sagan sample's unconditional NPZ has empty labels; arr_1 may be anything
            if lshape != (shape[0],) or ldtype.kind not in "iu" or ldtype.hasobject:
                raise DataError(f"{path}: {lk!r} holds {ldtype} values, shape {lshape}; labels must be integers, "
                                f"one per image ({shape[0]},)")
            label_key = lk
            break
    return NpzLayout(path, key, layout, shape[0], channels, resolution, label_key)


def read_npz(layout: NpzLayout) -> SampleImages:
    """The images (and labels) :func:`inspect_npz` found, as uint8 (N, C, H, W)."""
    try:
        with np.load(layout.path, allow_pickle=False) as z:
            arr = z[layout.image_key]
            labels = z[layout.label_key] if layout.label_key else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{layout.path}: cannot read {layout.image_key!r} ({e})") from None
    images = torch.from_numpy(np.ascontiguousarray(arr))
    if layout.layout == "NHWC":
        images = images.permute(0, 3, 1, 2).contiguous()
    if labels is not None and (labels < 0).any():
        raise DataError(f"{layout.path}: {layout.label_key!r} holds negative labels; classes are 0, 1, ...")
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    n, c, r = layout.count, layout.channels, layout.resolution
    desc = (f"{layout.path} ({plural(n, 'image')} {r}x{r}, {plural(c, 'channel')}, {layout.image_key!r} {layout.layout}"
            + (f", labels {layout.label_key!r}" if y is not None else ", unlabelled") + ")")
    return SampleImages(images, y, [], layout.path, "npz", desc,
                        {"array": layout.image_key, "layout": layout.layout, "labels": layout.label_key})


# --------------------------------------------------------------------------- image folders

def survey_folder(root: str | Path) -> tuple[int, Path | None]:
    """(the image files under ``root`` and its sub-folders, the first of them in sorted order): what
    reading it will cost, before it is read."""
    root = Path(root)
    count, first = 0, None
    for dirpath, dirnames, fnames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(f for f in fnames if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS))
        count += len(names)
        if first is None and names:
            first = Path(dirpath) / names[0]
    return count, first


def first_image_size(path: Path) -> int:
    """The shorter side of the image in ``path`` (the size a folder's images are read at)."""
    try:
        with Image.open(path) as im:
            return min(im.size)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise DataError(f"{path} cannot be read as an image ({type(e).__name__}: {e})") from None


def read_image_folder(root: str | Path, resolution: int, progress: bool = True) -> SampleImages:
    """The images of folder ``root`` at ``resolution`` (channels detected: 1 when all are greyscale),
    with their classes when it has class sub-folders."""
    root = Path(root)
    cfg = DataConfig(dataset="image_folder", root=str(root), channels=None, download=False, num_workers=0)
    data = load_data(cfg, resolution, conditional=True, progress=progress)
    images, labels = _folder_images(data, progress)
    classes = list(getattr(data.folder, "classes", []))  # one class folder is still a class
    desc = f"{data.source}, read at {resolution}x{resolution}"
    return SampleImages(images, labels.long() if classes else None, classes, root, "folder", desc)


# --------------------------------------------------------------------------- the real side

def folder_reference_config(folder: str | Path, channels: int) -> DataConfig:
    """The data config of a ``--reference FOLDER``: the Fashion-MNIST IDX files or CIFAR-10 batches it
    holds, else its image files (an image folder); DataError when it holds none of these."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"--reference {folder}: no such folder")
    kind = detect_folder_dataset(folder)
    if kind is None:
        raise DataError(f"--reference {folder}: no image files (directly in it or in class sub-folders), "
                        "Fashion-MNIST IDX files or CIFAR-10 batches there")
    return DataConfig(dataset=kind, root=str(folder), channels=channels, download=False, num_workers=0)


def reference_class_names(cfg: DataConfig, resolution: int) -> list[str]:
    """The class names of a reference's dataset, in the order of its labels ([] when unlabelled)."""
    if cfg.dataset == "fashion_mnist":
        return list(FMNIST_CLASSES)
    if cfg.dataset == "image_folder":  # as load_image_folder numbers them: the non-hidden sub-folders, sorted
        root = Path(cfg.root).expanduser()
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    return list(load_data(cfg, resolution, conditional=True, progress=False).class_names)

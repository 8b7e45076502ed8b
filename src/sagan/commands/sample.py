"""``sagan sample``: generated images from any model source, as a grid PNG, an NPZ and/or one PNG per image.

Two ways to pick the images (docs/sampling.md):

- ``-n N --seed S`` (default 64 images, seed 0): the latents of all N images come from one seeded
  generator and run through the model in batches of ``--batch-size``;
- ``--seeds 0-99`` (or ``3,7,10-12``): one image per seed, each latent from its own seed
  (``seed_latents``) and run on its own (batch 1), and seed ``s`` has class ``classes[s % len(classes)]``
  (every class by default), so an image depends only on its seed, the classes and the truncation,
  never on the other images: ``--seeds 42`` regenerates the image of seed 42 in ``--seeds 0-99``.

Every file is written atomically; ``sample_info.json`` records the weights and the settings.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import sagan
from sagan.commands.common import (
    MAX_BATCH,
    MAX_IMAGES,
    add_device_argument,
    add_progress_argument,
    add_source_arguments,
    check_memory,
    check_seed,
    check_size,
    check_writable,
    compact_seeds,
    device_from_args,
    parse_seeds,
    parse_truncation,
    partial_write_error,
    resolve_classes,
)
from sagan.errors import UsageError, plural
from sagan.fileio import atomic_path, atomic_write, atomic_write_text

if TYPE_CHECKING:
    import torch

    from sagan.sampling import LoadedRun

log = logging.getLogger(__name__)

FORMATS = ("grid", "npz", "png")
FORMAT_ALIASES = {"both": ("grid", "npz")}  # the former default's name
DEFAULT_FORMAT = "grid,npz"
DEFAULT_NUM, DEFAULT_SEED, DEFAULT_BATCH = 64, 0, 256
INFO_NAME = "sample_info.json"


# --------------------------------------------------------------------------- parsing the flags

def parse_formats(text: str) -> list[str]:
    """``"grid,npz,png"`` (any non-empty subset; ``both`` = grid,npz) -> the formats in FORMATS order."""
    chosen: set[str] = set()
    for item in text.split(","):
        item = item.strip().lower()
        if item in FORMAT_ALIASES:
            chosen.update(FORMAT_ALIASES[item])
        elif item in FORMATS:
            chosen.add(item)
        else:
            raise UsageError(f"--format {text!r}: {item!r} is not one of {', '.join(FORMATS)} "
                             "(give a comma-separated subset, e.g. grid,png)")
    return [f for f in FORMATS if f in chosen]


# --------------------------------------------------------------------------- file names

def class_folder_name(index: int, num_classes: int, class_names: list[str]) -> str:
    """``03_Dress``: the class index zero-padded to one width (so sorted names are in class order, as
    torchvision's ImageFolder numbers them) and the class name made safe for a file system."""
    width = max(2, len(str(num_classes - 1)))
    name = class_names[index] if index < len(class_names) else ""
    safe = re.sub(r"[^\w.-]+", "_", name).strip("_.")
    return f"{index:0{width}d}_{safe}" if safe else f"{index:0{width}d}"


def image_file_name(seed: int | None, index: int) -> str:
    """``seed0042.png`` in --seeds mode, ``img000042.png`` (the running index) in -n mode."""
    return f"seed{seed:04d}.png" if seed is not None else f"img{index:06d}.png"


def output_stem(run: LoadedRun, seeds: list[int] | None, seed: int, truncation: float | None) -> str:
    """The grid's and NPZ's name without suffix: the step, the seed(s), the truncation, raw G."""
    if seeds is not None:
        spec = compact_seeds(seeds).replace(",", "_")
        what = f"seeds{spec}" if len(spec) <= 32 else f"seeds{seeds[0]}-{seeds[-1]}_n{len(seeds)}"
    else:
        what = f"seed{seed}"
    psi = f"_psi{truncation:g}" if truncation is not None else ""
    raw = "" if run.ema else "_raw"
    return f"samples_step{run.step}{raw}_{what}{psi}"


def free_stem(out: Path, stem: str, formats: list[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... : the first whose grid and NPZ names are both unused (an
    earlier sampling's files are never overwritten)."""
    suffixes = [s for f, s in (("grid", ".png"), ("npz", ".npz")) if f in formats]
    k, candidate = 1, stem
    while any((out / f"{candidate}{s}").exists() for s in suffixes):
        k += 1
        candidate = f"{stem}-{k}"
    return candidate


def checked_out_dir(out: Path, folders: list[str]) -> Path:
    """Create ``out`` (and the class sub-folders) now, before sampling; one-line UsageError when a file
    is in the way or the folder cannot be created."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder to write the samples into")
    for name in folders:
        if (out / name).exists() and not (out / name).is_dir():
            raise UsageError(f"--out {out}: {out / name} is a file where a class folder goes; move it or "
                             "choose another --out")
    try:
        for name in folders or [""]:
            (out / name).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the folder: {e.strerror or e}") from None
    return check_writable(out)


# --------------------------------------------------------------------------- writing

def write_npz(path: Path, images: torch.Tensor, labels: torch.Tensor | None, seeds: list[int] | None) -> Path:
    import numpy as np

    from sagan.data.datasets import to_uint8

    arrays = {"images": to_uint8(images).permute(0, 2, 3, 1).numpy(),
              "labels": labels.numpy() if labels is not None else np.zeros(0)}
    if seeds is not None:
        arrays["seeds"] = np.asarray(seeds, dtype=np.uint64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, numpy would append .npz to the temporary one
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def write_grid(path: Path, images: torch.Tensor, labels: torch.Tensor | None) -> Path:
    """One row per class when every class has as many images; else rows of 8."""
    import torch

    from sagan.data.grid import save_grid

    n = len(images)
    n_distinct = len(set(labels.tolist())) if labels is not None else 0
    if n_distinct > 1 and n % n_distinct == 0:
        return save_grid(images[torch.argsort(labels, stable=True)], path, n // n_distinct)
    return save_grid(images, path, 8)


def write_pngs(out: Path, images: torch.Tensor, labels: torch.Tensor | None, seeds: list[int] | None,
               folders: dict[int, str], done: list[tuple[Path, bool]] | None = None) -> int:
    """One PNG per image, in its class folder (unconditional: directly in ``out``); grayscale stays
    one channel. Returns the number written; ``done`` gets (path, existed before) for each as it is written."""
    from sagan.sampling import to_pil

    pil = to_pil(images)
    for i, img in enumerate(pil):
        folder = out / folders[int(labels[i])] if labels is not None else out
        path = folder / image_file_name(seeds[i] if seeds is not None else None, i)
        existed = path.exists()
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        if done is not None:
            done.append((path, existed))
    return len(pil)


# --------------------------------------------------------------------------- the command

def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="write generated images: a grid PNG, an NPZ, one PNG per image",
        description="Generate images from a trained model: -n N --seed S (batched), or --seeds 0-99 (one "
                    "image per seed, each generated on its own with batch size 1, so any image can be "
                    "regenerated alone from its seed, from the run directory, a checkpoint or an export). "
                    "See docs/sampling.md.")
    add_source_arguments(p)
    p.add_argument("-n", "--num", type=int, help=f"number of images (default {DEFAULT_NUM}); not with --seeds")
    p.add_argument("--seed", type=int, help=f"seed of the -n images' latents (default {DEFAULT_SEED}); not with --seeds")
    p.add_argument("--seeds", metavar="SEEDS",
                   help="one image per seed, e.g. 0-99 or 3,7,10-12: each image's latent comes from its seed alone and "
                        "is generated with batch size 1, so it never depends on the other images")
    p.add_argument("--classes", metavar="CLASSES",
                   help="comma-separated class names or indices (default: every class, in order). Of the K "
                        "classes, seed S gets the one at position S mod K (counting from 0), so a seed always "
                        "names the same image and one class gives every seed that class; with -n, image i gets "
                        "the one at position i mod K")
    p.add_argument("--truncation", type=float, metavar="PSI",
                   help="draw latents from the normal truncated to [-PSI, PSI] (resampled, as in BigGAN); "
                        "smaller: less variety, higher fidelity; 0: the mean latent (one image per class)")
    p.add_argument("--format", default=DEFAULT_FORMAT, metavar="FORMATS",
                   help="comma-separated subset of grid (one PNG grid), npz (uint8 images + labels), png (one "
                        f"PNG per image in class folders 00_NAME/ that torchvision's ImageFolder reads); "
                        f"default {DEFAULT_FORMAT}")
    p.add_argument("--out", metavar="DIR",
                   help="the folder to write into (created if missing; default samples_out/ in the run "
                        "directory or export folder, ./pretrained-NAME/samples_out for --pretrained); an earlier "
                        "grid or NPZ there is never overwritten (the new one is named NAME-2)")
    p.add_argument("--batch-size", type=int, metavar="N", help=f"images per forward pass in -n mode (default {DEFAULT_BATCH})")
    add_device_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    # Every flag is checked before the model is loaded, the folder before sampling.
    seeds = None
    if args.seeds is not None:
        given = [f for f, v in (("-n", args.num), ("--seed", args.seed), ("--batch-size", args.batch_size)) if v is not None]
        if given:
            raise UsageError(f"--seeds picks the images by seed and generates each on its own; drop "
                             f"{' and '.join(given)} (or drop --seeds)")
        seeds = parse_seeds(args.seeds)
    num = len(seeds) if seeds is not None else (DEFAULT_NUM if args.num is None else args.num)
    seed = DEFAULT_SEED if args.seed is None else args.seed
    batch_size = 1 if seeds is not None else (DEFAULT_BATCH if args.batch_size is None else args.batch_size)
    check_size(num, "--num", MAX_IMAGES, hint=" per call (for more, sample --seeds ranges in several calls)")
    check_size(batch_size, "--batch-size", MAX_BATCH)
    check_seed(args.seed)
    truncation = parse_truncation(args.truncation)
    formats = parse_formats(args.format)
    device = device_from_args(args)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: is a file; give a folder to write the samples into")

    from sagan.commands.loading import load_from_args
    from sagan.sampling import generate, image_classes

    run = load_from_args(args, device)
    res = run.G.resolution  # the images are held in memory (float, then uint8) until they are written
    check_memory(num * (run.channels * res * res * 10 + run.G.z_dim * 4), f"{num} images of {res}x{res} px",
                 "ask for fewer, or split --seeds into ranges sampled in several calls")
    classes = resolve_classes(args.classes, run.num_classes, run.class_names)
    labels = image_classes(run.num_classes, classes, num, seeds)
    folders = ({c: class_folder_name(c, run.num_classes, run.class_names) for c in sorted(set(labels.tolist()))}
               if labels is not None and "png" in formats else {})
    out = checked_out_dir(Path(args.out) if args.out else run.output_base / "samples_out", list(folders.values()))
    log.info(f"sampling {plural(num, 'image')} from {run.describe()}")

    images, labels = generate(run.G, num if seeds is None else None, classes, seed, batch_size, device,
                              progress=not args.no_progress, truncation=truncation, seeds=seeds)

    stem = free_stem(out, output_stem(run, seeds, seed, truncation), formats)
    written: dict[str, object] = {}
    done: list[tuple[Path, bool]] = []  # every file written so far (and whether it was there before)
    try:  # a full disk part-way leaves a record of what was written (or nothing new), and one line
        if "grid" in formats:
            written["grid"] = write_grid(out / f"{stem}.png", images, labels).name
            done.append((out / f"{stem}.png", False))
        if "npz" in formats:
            written["npz"] = write_npz(out / f"{stem}.npz", images, labels, seeds).name
            done.append((out / f"{stem}.npz", False))
        if "png" in formats:
            written["png"] = write_pngs(out, images, labels, seeds, folders, done)
    except OSError as e:
        raise partial_write_error(out / INFO_NAME, {"sagan_version": sagan.__version__, "model": run.provenance(),
                                                    "num_images": num, "formats": formats,
                                                    **({"seeds": compact_seeds(seeds)} if seeds is not None
                                                       else {"n": num, "seed": seed})}, done, e, "the samples") from None

    info = {
        "sagan_version": sagan.__version__,
        "model": run.provenance(),
        "mode": "seeds" if seeds is not None else "num",
        **({"seeds": compact_seeds(seeds)} if seeds is not None else {"n": num, "seed": seed}),
        "num_images": num,
        "batch_size": batch_size,
        "classes": classes,
        "class_names": [run.class_names[c] for c in (classes or range(run.num_classes))] if run.class_names else [],
        "truncation": truncation,
        "formats": formats,
        "files": written,
        "png_folders": sorted(folders.values()) if "png" in formats else [],
        "device": str(device),
    }
    try:
        atomic_write_text(out / INFO_NAME, json.dumps(info, indent=2) + "\n")
    except OSError as e:
        raise partial_write_error(out / INFO_NAME, info, done, e, "the samples") from None
    parts = [str(out / n) for k, n in written.items() if k != "png"]
    if "png" in written:
        parts.append(f"{plural(written['png'], 'PNG')} under {out}")
    log.info(f"wrote {', '.join(parts)} and {INFO_NAME}")
    return 0

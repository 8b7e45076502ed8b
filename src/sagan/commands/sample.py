"""``sagan sample``: generated images from a run directory or checkpoint, as a grid PNG and/or an NPZ."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sagan.data.datasets import to_uint8
from sagan.errors import UsageError
from sagan.train.runs import generate, load_run
from sagan.train.distributed import resolve_device
from sagan.data.grid import save_grid


def parse_classes(text: str | None) -> list[int] | None:
    if text is None or text == "all":
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise UsageError(f"--classes {text!r}: give comma-separated class indices, e.g. 0,3,7") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write generated images from a run directory or checkpoint")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("-n", "--num", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--classes", help="comma-separated class indices to cycle through (default all)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/samples_out)")
    p.add_argument("--format", choices=["png", "npz", "both"], default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of the EMA one")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise UsageError(f"--num {args.num}: must be >= 1")
    device = resolve_device(args.device)
    run = load_run(args.run, ema=not args.no_ema, device=device)
    classes = parse_classes(args.classes)
    if classes is not None:
        if run.num_classes == 0:
            raise UsageError("--classes given but this model is unconditional")
        bad = [c for c in classes if not 0 <= c < run.num_classes]
        if bad:
            raise UsageError(f"--classes {bad}: this model has classes 0..{run.num_classes - 1}")
    images, labels = generate(run.G, args.num, classes, args.seed, args.batch_size, device, progress=True)
    out = Path(args.out) if args.out else (run.run_dir or run.checkpoint.parent) / "samples_out"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"samples_step{run.step}_seed{args.seed}"
    written = []
    if args.format in ("png", "both"):
        n_distinct = len(set(labels.tolist())) if labels is not None else 0
        if n_distinct and args.num % n_distinct == 0:  # one row per class
            images_png, nrow = images[torch.argsort(labels, stable=True)], args.num // n_distinct
        else:
            images_png, nrow = images, 8
        written.append(save_grid(images_png, out / f"{stem}.png", nrow))
    if args.format in ("npz", "both"):
        arr = to_uint8(images).permute(0, 2, 3, 1).numpy()
        path = out / f"{stem}.npz"
        np.savez_compressed(path, images=arr, labels=labels.numpy() if labels is not None else np.zeros(0))
        written.append(path)
    print(f"wrote {args.num} images from {run.checkpoint} (step {run.step}, "
          f"{'raw' if args.no_ema else 'EMA'} generator): " + ", ".join(str(w) for w in written))
    return 0

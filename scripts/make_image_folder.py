#!/usr/bin/env python
"""Write the first N images of a standard dataset as an image folder (PNG), to try folder training
on data the project knows, e.g. the small-data A/B of docs/experiments.md:

    python scripts/make_image_folder.py --dataset fashion_mnist --n 2000 --out data/fmnist2000
    python scripts/make_image_folder.py --dataset fashion_mnist --n 2000 --flat --out data/fmnist2000-flat

Class folders are named like ``sagan sample --format png`` names them (``03_Dress``); ``--flat``
puts every image in one folder (unconditional data). An existing --out is refused. Images are taken
in a seeded random order balanced over classes (``--seed``), at the dataset's native 28 or 32 px.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from sagan.config import DataConfig
from sagan.data.datasets import load_data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "cifar10"])
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--flat", action="store_true", help="one folder, no class sub-folders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="where the dataset is (default: the usual places)")
    args = p.parse_args()
    out = Path(args.out)
    if out.exists():
        print(f"{out} exists; choose a new --out", file=sys.stderr)
        return 2
    data = load_data(DataConfig(dataset=args.dataset, root=args.data), 32)
    labels = data.labels.numpy()
    rng = np.random.default_rng(args.seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(data.num_classes)]
    order = [int(i) for group in zip(*per_class) for i in group][: args.n]  # round-robin over classes
    if len(order) < args.n:
        print(f"--n {args.n}: the dataset has only {len(order)} class-balanced images", file=sys.stderr)
        return 2
    out.mkdir(parents=True)
    for k, i in enumerate(order):
        c = int(labels[i])
        folder = out if args.flat else out / f"{c:02d}_{re.sub(r'[^A-Za-z0-9]+', '_', data.class_names[c]).strip('_')}"
        folder.mkdir(exist_ok=True)
        img = data.images[i].permute(1, 2, 0).numpy()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{k:05d}.png")
    print(f"wrote {len(order)} images of {args.dataset} to {out}" + (" (flat)" if args.flat else
          f" in {data.num_classes} class folders"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

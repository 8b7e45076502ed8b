#!/usr/bin/env python
"""Score run directories against held-out Fashion-MNIST images (the 10000 of the test split), for
runs trained on a small folder of Fashion-MNIST training images (scripts/make_image_folder.py).

`sagan evaluate` compares a folder run with its own training folder, which cannot tell a
generator that covers the data from one that reproduces those few images. The held-out split can.
Writes one JSON with every run's numbers and prints a table.

Usage: python scripts/eval_heldout.py RUN_DIR [RUN_DIR ...] --out FILE.json [-n 10000]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sagan import generate, load_run
from sagan.config import DataConfig
from sagan.data.datasets import to_uint8
from sagan.metrics.evaluation import compute_metrics
from sagan.metrics.reference import reference_for

METRICS = ["is", "fid", "kid", "pr"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("-n", type=int, default=10000, help="generated images per run (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    reference = reference_for(DataConfig(dataset="fashion_mnist"), 32, 1, split="test", progress=False)
    rows = {}
    for run_dir in args.runs:
        t0 = time.time()
        run = load_run(run_dir)  # the newest checkpoint, EMA generator
        images, labels = generate(run.G, args.n, seed=args.seed)
        scores = compute_metrics(to_uint8(images), reference, METRICS, "fmnist", fake_labels=labels,
                                 progress=False)
        rows[run_dir.name] = {"step": run.step, "seconds": round(time.time() - t0, 1),
                              **{k: float(v) for k, v in scores.items()}}
        r = rows[run_dir.name]
        print(f"{run_dir.name:24s} step {r['step']:6d}  FID {r['fid']:7.2f}  KID {r['kid_mean']:.4f}  "
              f"IS {r['is_mean']:.3f}  acc {r.get('class_accuracy', float('nan')):.3f}  "
              f"precision {r['precision']:.3f}  recall {r['recall']:.3f}  ({r['seconds']} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reference": "fashion_mnist test split (10000 images), classifier features",
                                    "samples": args.n, "seed": args.seed, "runs": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

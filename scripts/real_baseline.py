#!/usr/bin/env python
"""Metrics of the real Fashion-MNIST test split against the train split (what perfect samples score).

Prints a table and writes JSON (default: real_baseline.json in the current directory). Uses the
same code path as ``sagan evaluate`` (torch-fidelity on the offline classifier's features), so a
generator's numbers can be read next to these. Example:

    python scripts/real_baseline.py --num-test 10000 --out runs/real_baseline.json
"""
from __future__ import annotations

import argparse
import json
import time

from sagan.commands.evaluate import metrics_table
from sagan.metrics.naming import metric_keys
from sagan.config import DataConfig
from sagan.metrics.classifier import classifier_info
from sagan.metrics.evaluation import METRICS, real_split_metrics
from sagan.metrics.reference import reference_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-test", type=int, default=None, help="test images used as 'samples' (default all 10000)")
    p.add_argument("--num-train", type=int, default=None, help="train images as the reference (default all 60000)")
    p.add_argument("--metrics", default=",".join(METRICS))
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--data", metavar="PATH", help="Fashion-MNIST IDX folder (default: found automatically)")
    p.add_argument("--out", default="real_baseline.json")
    args = p.parse_args()
    cfg = DataConfig(dataset="fashion_mnist", root=args.data)
    ref = reference_for(cfg, args.resolution, 1, "train", args.num_train)
    test = reference_for(cfg, args.resolution, 1, "test", args.num_test)
    t0 = time.perf_counter()
    res = real_split_metrics(ref, test, args.metrics.split(","), "fmnist")
    seconds = time.perf_counter() - t0
    print(f"real test split ({res['num_fake']}) vs train split ({res.get('num_real')}), fmnist features, "
          f"{seconds:.0f}s:\n{metrics_table(res, 'fmnist')}")
    record = {"metrics": metric_keys(res, "fmnist"), "reference": ref.description, "samples": test.description,
              "classifier": classifier_info(), "seconds": round(seconds, 1)}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

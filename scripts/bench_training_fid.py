#!/usr/bin/env python
"""Time one training-time FID evaluation (TrainingFID) for a preset, and print JSON.

Each repeat also times, just before it, what the run does first: recompute the EMA generator's
standing batch-norm statistics (``train.ema_bn_batches`` x ``train.ema_bn_batch_size`` samples), so
the two costs come from the same machine at the same moment.

The first call also builds (or loads from the cache) the reference statistics of all training
images; later calls are what a run pays every ``train.fid_every`` steps. Example:

    python scripts/bench_training_fid.py --preset fmnist32 --repeats 2 [--checkpoint RUN_DIR]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sagan.config import load_config
from sagan.data import load_data
from sagan.distributed import resolve_device
from sagan.metrics.tracking import TrainingFID
from sagan.models import build_models
from sagan.models.standing import standing_statistics
from sagan.sampling import load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fmnist32")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--checkpoint", help="evaluate this run's EMA generator instead of a fresh one")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, overrides=args.overrides)
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data, cfg.model.resolution, cfg.model.conditional)
    if args.checkpoint:
        g = load_run(args.checkpoint, device=device).G
    else:
        g, _ = build_models(cfg.model, data.num_classes, data.channels)
        g = g.to(device).eval()
    t0 = time.perf_counter()
    fid = TrainingFID(cfg, data, device)
    init = time.perf_counter() - t0
    calls = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        standing_statistics(g, cfg.train.ema_bn_batches, cfg.train.ema_bn_batch_size, cfg.train.seed)
        standing = time.perf_counter() - t
        t = time.perf_counter()
        scalars = fid(g)
        calls.append({"seconds": round(time.perf_counter() - t, 2), "standing_statistics_seconds": round(standing, 2),
                      **{k: round(v, 4) for k, v in scalars.items()}})
    out = {"preset": args.preset, "features": fid.features, "ema_bn_batches": cfg.train.ema_bn_batches,
           "ema_bn_batch_size": cfg.train.ema_bn_batch_size, "fid_samples": cfg.train.fid_samples,
           "fid_every": cfg.train.fid_every, "reference_images": len(data), "init_seconds": round(init, 2),
           "calls": calls, "threads": torch.get_num_threads(), "device": str(device)}
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

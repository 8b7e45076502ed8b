"""``sagan train-evaluator``: train the offline Fashion-MNIST classifier used by the metrics."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sagan.commands.common import add_device_argument, add_progress_argument, device_from_args
from sagan.errors import UsageError, plural
from sagan.metrics import WEIGHTS_FILE

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-evaluator", help="train the Fashion-MNIST classifier behind --features fmnist",
        description="Train the small CNN whose penultimate features and logits give FID/KID/IS/precision-recall "
                    "and class accuracy for Fashion-MNIST without downloading anything. Seeded and reproducible "
                    "on a given machine, device and thread count; the shipped weights were made with the "
                    "defaults and --device cpu --threads 1.")
    p.add_argument("--out", default=str(WEIGHTS_FILE), metavar="FILE",
                   help="the weights FILE to write (a .pt file, not a folder; default: the packaged file "
                        f"{WEIGHTS_FILE}, the one --features fmnist reads; an existing file is replaced)")
    p.add_argument("--data", metavar="PATH", help="folder with the Fashion-MNIST IDX files (default: found automatically)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--min-accuracy", type=float, default=0.90,
                   help="fail (exit 1, weights still written) below this test accuracy (default 0.90)")
    add_device_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=cmd_train_evaluator)


def cmd_train_evaluator(args: argparse.Namespace) -> int:
    import torch

    from sagan.config import DataConfig
    from sagan.data import load_data
    from sagan.metrics.classifier import INPUT_RESOLUTION, train_classifier


    if args.epochs < 1:
        raise UsageError(f"--epochs {args.epochs}: must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    if Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a folder; --out names the weights file to write, "
                         f"e.g. {Path(args.out) / WEIGHTS_FILE.name}")
    device = device_from_args(args)
    cfg = DataConfig(dataset="fashion_mnist", root=args.data, channels=1)
    train = load_data(cfg, INPUT_RESOLUTION, conditional=True, train=True)
    test = load_data(cfg, INPUT_RESOLUTION, conditional=True, train=False)
    where = f"{plural(torch.get_num_threads(), 'CPU thread')}" if device.type == "cpu" else str(device)
    log.info(f"data: {train.source}; {len(train)} train / {len(test)} test images at {INPUT_RESOLUTION}x{INPUT_RESOLUTION}; "
             f"{where}")
    res = train_classifier(train.images, train.labels, test.images, test.labels, out=Path(args.out), seed=args.seed,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=device,
                           progress=not args.no_progress)
    log.info(f"test accuracy {res.test_accuracy:.4f} (train, first 10k: {res.train_accuracy:.4f}) after {res.epochs} "
             f"epochs in {res.seconds:.0f}s; weights: {res.path} ({res.path.stat().st_size / 1e6:.2f} MB)")
    if res.test_accuracy < args.min_accuracy:
        log.warning(f"test accuracy {res.test_accuracy:.4f} is below --min-accuracy {args.min_accuracy}")
        return 1
    return 0

"""``sagan bench``: attention-layer, training-step, sampling and precision benchmarks.

Argument handling only: ``sagan.bench.measure`` measures (its docstring states the method),
``sagan.bench.render`` turns the JSON into ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sagan.bench import DEFAULT_SIZES, PRESETS, SECTIONS
from sagan.commands.common import (MAX_BATCH, add_device_argument, add_progress_argument, check_size, check_writable,
                                   device_from_args)
from sagan.errors import UsageError
from sagan.fileio import atomic_write_text

log = logging.getLogger(__name__)

RESULTS_NAME = "results.json"  # what --out DIR holds
MAX_ATTN_SIZE = 256  # the largest feature map of the architectures (G's last block at 256 px)
MAX_ATTN_BATCH = 1024
MAX_ATTN_CHANNELS = 4096  # as model.g_ch
MAX_REPS = 1000
MAX_THREADS = 1024


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: give comma-separated integers, e.g. 16,32") from None


def cmd_bench(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    if out_dir.suffix.lower() == ".json":
        raise UsageError(f"--out {args.out}: --out is a folder (the results are written as {RESULTS_NAME} in it); "
                         f"give e.g. --out {out_dir.parent / out_dir.stem}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {args.out} is a file; --out names the folder to write {RESULTS_NAME} into")
    device_from_args(args)  # an unknown device name: one line now, not after the first benchmark
    check_writable(out_dir)
    if args.markdown:
        md = Path(args.markdown)
        if md.is_dir():
            raise UsageError(f"--markdown {args.markdown} is a folder; --markdown names the file to render the "
                             "results into, e.g. docs/benchmarks.md")
        check_writable(md.parent, "--markdown")
    sizes = _int_list(args.sizes, "--sizes")
    bad = [s for s in sizes if not 2 <= s <= MAX_ATTN_SIZE or s % 2]
    if bad or not sizes:
        raise UsageError(f"--sizes {args.sizes}: {bad[0] if bad else 'no size'} is not a size the attention benchmark "
                         f"runs; give even feature-map sizes from 2 to {MAX_ATTN_SIZE} (the biggan variant pools "
                         "2x2), e.g. 16,32")
    check_size(args.reps, "--reps", MAX_REPS, hint=" timed repetitions")
    check_size(args.attn_batch, "--attn-batch", MAX_ATTN_BATCH)
    check_size(args.attn_channels, "--attn-channels", MAX_ATTN_CHANNELS)
    if args.attn_channels % 8:
        raise UsageError(f"--attn-channels {args.attn_channels}: must be a multiple of 8 (attention projects to C/8)")
    if args.train_batch is not None:
        check_size(args.train_batch, "--train-batch", MAX_BATCH)
    if args.threads is not None:
        check_size(args.threads, "--threads", MAX_THREADS)
    presets = [p.strip() for p in args.presets.split(",")]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise UsageError(f"--presets {args.presets}: {unknown[0]!r} is not a preset; choose from {','.join(PRESETS)}")
    only = args.only.split(",") if args.only else None
    if only and "data" in only and not args.data:
        raise UsageError("--only data measures a dataset's loading speed: give its folder with --data PATH")
    unknown = sorted(set(only or ()) - set(SECTIONS))
    if unknown:
        raise UsageError(f"--only {args.only}: unknown section(s) {', '.join(unknown)}; choose from {','.join(SECTIONS)}")
    from sagan.bench.measure import run_benchmarks
    from sagan.bench.render import render

    result = run_benchmarks(device=args.device, only=only, sizes=sizes,
                            attn_batch=args.attn_batch, attn_channels=args.attn_channels,
                            presets=presets, train_batch=args.train_batch,
                            overrides=args.overrides, reps=args.reps, threads=args.threads, note=args.note or "",
                            data_root=args.data)
    try:
        out = atomic_write_text(out_dir / RESULTS_NAME, json.dumps(result, indent=2) + "\n")
        log.info(f"wrote {out}")
        if args.markdown:
            atomic_write_text(args.markdown, render(result))
            log.info(f"wrote {args.markdown}")
    except OSError as e:  # the numbers were printed as they were measured
        raise UsageError(f"could not write the results ({e.filename or out_dir}: {e.strerror or e}); the numbers "
                         "are in the output above") from None
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark attention, training steps, sampling and precision; write JSON",
                       description="Benchmarks that print tables and write JSON (render it with benchmarks/render.py).")
    p.add_argument("--only", help="comma-separated subset of: matmul,precision,attention,train,data,profile (default "
                                  "all but profile; data only with --data). profile: torch.profiler's breakdown of "
                                  "the training step by kind of op, per --presets")
    p.add_argument("--data", metavar="PATH",
                   help="an image folder: also measure the data path alone (images/s of decoding and batching, "
                        "0 and 2 loader workers) next to the training step, per --presets (e.g. imagefolder64)")
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="attention feature-map sizes")
    p.add_argument("--attn-batch", type=int, default=8, help="attention benchmark batch (default 8)")
    p.add_argument("--attn-channels", type=int, default=64, help="attention benchmark channels (default 64)")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--train-batch", type=int, help="batch for every preset (default: per-preset, see docs)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="config override for the training-step benchmark, e.g. --set train.channels_last=true")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (median reported)")
    add_device_argument(p)
    add_progress_argument(p, has_bars=False)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--note", help="free text stored with the results (e.g. 'CPU shared with a training run')")
    p.add_argument("--out", metavar="DIR", default="benchmarks",
                   help=f"folder to write {RESULTS_NAME} into, created if needed (default benchmarks/)")
    p.add_argument("--markdown", metavar="FILE", help="also render FILE (e.g. docs/benchmarks.md)")
    p.set_defaults(func=cmd_bench)

"""``sagan report RUN_DIR``: one self-contained report.html for a run."""
from __future__ import annotations

import argparse
from pathlib import Path

from sagan.errors import UsageError
from sagan.train.distributed import resolve_device
from sagan.viz.report import build_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML report of a run (samples, curves, metrics, attention)",
        description="Write RUN_DIR/report.html: config, samples and their evolution, training curves, "
                    "evaluation results, attention figures and an interactive attention explorer. "
                    "The file needs no network access to view. See docs/attention.md.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--seed", type=int, default=0, help="seed for the generated images (default 0)")
    p.add_argument("--explorer-images", type=int, default=None, metavar="N",
                   help="generated images in the attention explorer (default one per class, at most 10)")
    p.add_argument("--max-snapshots", type=int, default=24, metavar="N",
                   help="at most N training sample grids in the evolution slider (default 24)")
    p.add_argument("--data", metavar="PATH", help="dataset location for D's attention on real images, if it moved")
    p.add_argument("--no-real", action="store_true", help="skip D's attention figure on real images")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if not run.is_dir():
        raise UsageError(f"{run} is not a directory; give a run directory (made by 'sagan train')")
    if args.explorer_images is not None and not 1 <= args.explorer_images <= 64:
        raise UsageError(f"--explorer-images {args.explorer_images}: choose 1..64")
    if args.max_snapshots < 1:
        raise UsageError(f"--max-snapshots {args.max_snapshots}: must be >= 1")
    if args.out and Path(args.out).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {args.out}: the report is HTML; give a file name ending in .html")
    out = build_report(run, args.out, seed=args.seed, explorer_images=args.explorer_images,
                       max_evolution=args.max_snapshots, device=resolve_device(args.device),
                       data_root=args.data, real_attention=not args.no_real)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 2 ** 20:.1f} MiB; open it in a browser, no network needed)")
    return 0

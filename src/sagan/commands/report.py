"""``sagan report SOURCE``: one self-contained report.html for a run or an exported model."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sagan.commands.common import (add_device_argument, add_progress_argument, add_source_arguments,
                                   check_seed, check_writable, device_from_args)
from sagan.errors import UsageError
from sagan.extras import check_extras

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML report of a run or model (samples, curves, metrics, attention)",
        description="Write report.html: config, samples and their evolution, training curves, evaluation "
                    "results, attention figures and an interactive attention explorer (the generated images use the "
                    "weights --checkpoint picks; the curves are the whole run's). For an exported folder "
                    "or a shipped model (no training record) the report shows the model, its samples and G's "
                    "attention. For a study folder ('sagan study') it shows the study's tables and figures, "
                    "with links to its runs' reports. The file needs no network access to view. "
                    "See docs/attention.md and docs/experiments.md.")
    add_source_arguments(p)
    p.add_argument("--out", metavar="DIR",
                   help="folder to write report.html into, created if needed (default: the run directory; "
                        "for an exported folder that folder; for --pretrained NAME ./pretrained-NAME)")
    p.add_argument("--seed", type=int, default=0, help="seed for the generated images (default 0)")
    p.add_argument("--explorer-images", type=int, default=None, metavar="N",
                   help="generated images in the attention explorer (default one per class, at most 10)")
    p.add_argument("--max-snapshots", type=int, default=24, metavar="N",
                   help="at most N training sample grids in the evolution slider (default 24)")
    p.add_argument("--data", metavar="PATH",
                   help="where the training images are now, if they moved (D's attention, nearest training images)")
    p.add_argument("--no-real", action="store_true",
                   help="skip what needs the real training images: D's attention on them, the nearest training images")
    add_device_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    if args.explorer_images is not None and not 1 <= args.explorer_images <= 64:
        raise UsageError(f"--explorer-images {args.explorer_images}: choose 1..64")
    if args.max_snapshots < 1:
        raise UsageError(f"--max-snapshots {args.max_snapshots}: must be >= 1")
    check_seed(args.seed)
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() in (".html", ".htm"):
            raise UsageError(f"--out {args.out}: --out is a folder (the report is written as report.html in it); "
                             f"give e.g. --out {out.parent / out.stem}")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {args.out} is a file; --out names the folder to write report.html into")
    check_extras("figures", needed_for="sagan report")
    from sagan.commands.loading import load_from_args
    from sagan.study.arms import SPEC_FILE
    from sagan.viz.report import build_report

    if args.source and not args.pretrained and (Path(args.source) / SPEC_FILE).is_file():
        return _study_report(args)
    device = device_from_args(args)
    run = load_from_args(args, device=device)
    check_writable(Path(args.out) if args.out is not None else run.output_base)  # before the images are made
    path = build_report(run, args.out, seed=args.seed, explorer_images=args.explorer_images,
                        max_evolution=args.max_snapshots, device=device, data_root=args.data,
                        real_attention=not args.no_real, progress=not args.no_progress)
    size = path.stat().st_size
    log.info(f"wrote {path} ({size / 2 ** 20:.1f} MiB; open it in a browser, no network needed)\nfrom {run.describe()}")
    return 0


def _study_report(args: argparse.Namespace) -> int:
    """A study folder: its results (collected now, nothing evaluated) and one page with all of them."""
    from sagan.study.arms import read_spec
    from sagan.study.results import collect, write_report, write_results

    spec = read_spec(args.source)
    out = Path(args.out) if args.out else Path(args.source)
    out.mkdir(parents=True, exist_ok=True)
    results = collect(spec)
    write_results(out, results)
    path = write_report(out, results)
    log.info(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB; open it in a browser, no network needed)\n"
             f"from the study in {args.source}")
    return 0

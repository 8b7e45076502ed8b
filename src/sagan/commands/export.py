"""``sagan export``: a trained generator as a portable folder (safetensors + JSON) or an ONNX file."""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import sagan
from sagan.commands.common import (
    add_progress_argument,
    add_source_arguments,
    check_writable,
)
from sagan.errors import UsageError
from sagan.extras import check_extras

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a run's generator as a folder that loads without the training code (or as ONNX)",
        description="Write the generator (EMA weights by default) of a run directory or checkpoint as a new "
                    "folder: model.safetensors, config.json (architecture, class names, training step, tracked "
                    "FID, the training config) and a model card. Load it with "
                    "sagan.Generator.from_pretrained(DIR), or give DIR to any sagan command in place of a run "
                    "directory. With --format onnx the folder holds generator.onnx (inputs z and y, output image) "
                    "and generator.json (the same record).")
    add_source_arguments(p)
    p.add_argument("--out", metavar="DIR",
                   help="the folder to create (default SOURCE_RUN/export-step<STEP>[-onnx]); never overwritten")
    p.add_argument("--format", choices=["safetensors", "onnx"], default="safetensors",
                   help="safetensors (default; loads with from_pretrained) or onnx (for onnxruntime and friends)")
    add_progress_argument(p, has_bars=False)  # the weights are read and written on the CPU: no --device
    p.set_defaults(func=cmd_export)


def _write(write, out: Path) -> None:
    """``write()`` builds the export in a temporary folder renamed to ``out`` at the end: a full disk
    (or a lost permission) part-way is one line, and nothing is left behind."""
    from safetensors import SafetensorError
    try:
        write()
    except (OSError, SafetensorError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
        raise UsageError(f"writing the export {out} failed ({why}); nothing was written (an export appears whole or "
                         "not at all): free space (or choose another --out) and run the same command again") from None


def cmd_export(args: argparse.Namespace) -> int:
    what, run = export_from_args(args)
    log.info(f"wrote {what}\nfrom {run.describe()}")
    return 0


def export_from_args(args: argparse.Namespace):
    """Write the export the arguments ask for; returns what was written (for the message) and the
    loaded model (a ``LoadedRun``)."""
    if args.out and Path(args.out).exists():
        raise UsageError(f"--out {args.out} exists; an export is written to a new folder (nothing is overwritten)")
    if args.format == "onnx":
        check_extras("onnx", needed_for="sagan export --format onnx")
    from sagan.commands.loading import load_from_args
    from sagan.models.export import (
        ONNX_INFO_NAME,
        ONNX_NAME,
        save_export,
        write_onnx_export,
    )
    from sagan.runs.checkpoints import read_best_record
    from sagan.runs.folder import RunDir

    run = load_from_args(args, device="cpu")
    out = Path(args.out) if args.out else (
        run.output_base / f"export-step{run.step}{'-best' if run.which == 'best' else ''}"
                          f"{'-onnx' if args.format == 'onnx' else ''}")
    if out.exists():
        raise UsageError(f"{out} exists; choose another folder with --out (nothing is overwritten)")
    check_writable(out)
    tracked = run.tracked_fid
    if tracked is None and run.run_dir is not None:
        best = read_best_record(RunDir(run.run_dir).best)
        if best is not None and best["step"] == run.step:  # the newest checkpoint is also the best
            tracked = best
    trained_by = None
    if run.run_dir is not None:
        try:
            trained_by = json.loads(RunDir(run.run_dir).version.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            trained_by = None
    if tracked is not None and run.bn.get("recomputed_at_load") and "bn_statistics" not in tracked:
        tracked = {**tracked, "bn_statistics": "copied from the raw G"}  # measured before standing statistics
    info = {
        "step": run.step, "ema": run.ema, "checkpoint": str(run.checkpoint), "checkpoint_kind": run.which,
        "bn_statistics": {k: v for k, v in run.bn.items() if k != "recomputed_at_load"}, "tracked_fid": tracked, "dataset": run.dataset, "config": run.cfg.to_dict(),
        "trained_by": trained_by,  # the run's version.json: the command, code commit and versions
        "sagan_version": sagan.__version__, "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if run.kind != "checkpoint":  # re-exporting an export keeps its record
        from sagan.models.export import export_info
        info = dict(export_info(run.G), **{k: info[k] for k in ("sagan_version", "exported", "bn_statistics",
                                                                 "tracked_fid")})
    if args.format == "onnx":
        _write(lambda: write_onnx_export(run.G, out, info), out)
        what = (f"{out / ONNX_NAME} (ONNX: inputs z{' and y (class index)' if run.num_classes else ''}, "
                f"output image in [-1, 1]; {ONNX_INFO_NAME} says which model it is)")
    else:
        _write(lambda: save_export(run.G, out, info), out)
        what = f"{out} (load with sagan.Generator.from_pretrained({str(out)!r}))"
    return what, run

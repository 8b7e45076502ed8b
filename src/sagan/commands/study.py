"""``sagan study``: the paper's experiments as families of ordinary runs (docs/experiments.md).

``sagan study stabilisation|attention|reduction`` trains and evaluates every arm x seed (re-running
the same command skips finished runs and resumes unfinished ones), then writes results.json,
results.md, curves.png, d_scores.png, gamma.png and differences.png into the study folder. ``--list`` prints the
``sagan train`` command of every run instead, for a cluster's scheduler; ``sagan study collect DIR``
evaluates finished runs and writes the results from whatever is there.
"""
from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from sagan.commands.common import add_progress_argument
from sagan.config import PRESETS
from sagan.errors import UsageError, plural
from sagan.fileio import atomic_write_text
from sagan.study.arms import SPEC_FILE, STUDIES, StudySpec, read_spec
from sagan.study.results import RESULTS_MD, collect, write_results
from sagan.study.runner import StudyFailed, run_study

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="paired experiments: the paper's stabilisation, attention and reduction studies, and augment",
                       description="Train every arm x seed of a study as ordinary run directories (paired: with a "
                                   "seed, every arm starts from the same weights, data and noise), evaluate them, and "
                                   "write tables (mean ± std over seeds; per planned comparison the paired difference, "
                                   "its t interval, the t test's and the exact sign-flip p and, for the primary endpoint, "
                                   "both Holm-adjusted and the verdict) and figures. See docs/experiments.md.")
    kinds = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for kind, (_, what) in STUDIES.items():
        k = kinds.add_parser(kind, help=what, description=f"The {kind} study: {what}. The base run is defined like "
                             "'sagan train' (--preset, --config, --set); each arm adds its overrides.")
        k.add_argument("--preset", choices=sorted(PRESETS), default=None, help="base preset (default fmnist32)")
        k.add_argument("--config", metavar="FILE", help="base YAML config file")
        k.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="base override (repeatable), e.g. --set train.batch_size=32")
        k.add_argument("--seeds", type=int, default=2, help="seeds per arm: train.seed = 0..N-1 (default 2)")
        k.add_argument("--steps", type=int, help="generator steps per run (default: the base config's train.steps)")
        k.add_argument("--fid-every", type=int, metavar="N",
                       help="training-time FID every N steps, the curves of curves.png (default steps // 8)")
        k.add_argument("--eval-samples", type=int, default=10_000, metavar="N",
                       help="samples for the final 'sagan evaluate' of each run (default 10000)")
        k.add_argument("--fid-samples", type=int, default=10_000, metavar="N",
                       help="samples of every training-time FID, fixed latents (default 10000)")
        k.add_argument("--endpoint-evals", type=int, default=3, metavar="K",
                       help="the primary endpoint: training-time FID averaged over the last K evaluations "
                            "(default 3)")
        k.add_argument("--arms", metavar="A,B,...", help="only these arms, in this order (the first is the baseline "
                                                        "of the comparisons; default: all, see docs/experiments.md)")
        k.add_argument("--features", choices=["inception", "fmnist"], default=None,
                       help="features of the final evaluation (default: fmnist for Fashion-MNIST, else inception)")
        k.add_argument("--out", metavar="DIR", help="the study folder (default studies/STUDY-PRESET); re-run with the "
                                                    "same folder to continue it, or with more --seeds or --arms to "
                                                    "extend it")
        k.add_argument("--list", action="store_true",
                       help="print the 'sagan train' command of every arm x seed, one per line, and write the study "
                            "folder's study.json (for 'sagan study collect'); trains nothing")
        k.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="runs at once on this machine, threads split between them (default 1)")
        add_progress_argument(k)
        k.set_defaults(func=cmd_study)
    c = kinds.add_parser("collect", help="evaluate finished runs of a study folder and write its results",
                         description="Read every run of a study folder (runs started by 'sagan study' or by the "
                                     "commands of 'sagan study ... --list'), evaluate the finished ones that have no "
                                     "evaluation yet, and write results.json, results.md and the figures (curves.png, d_scores.png, "
                                     "gamma.png, differences.png). "
                                     "Missing, unfinished or damaged runs are named and left out.")
    c.add_argument("folder", metavar="DIR", help="the study folder (holds study.json)")
    c.add_argument("--out", metavar="DIR", help="folder to write the results into (default: the study folder)")
    c.add_argument("--no-evaluate", action="store_true", help="do not run 'sagan evaluate' on unevaluated runs")
    c.add_argument("--jobs", type=int, default=1, metavar="N", help="evaluations at once (default 1)")
    add_progress_argument(c)
    c.set_defaults(func=cmd_collect)
    st = kinds.add_parser("status", help="where a study stands: each run's step, speed and machines, and what is left",
                          description="Print every run of a study folder: done, part-way (its newest checkpoint and "
                                      "the last step it logged, when, at what speed) or not started, with the "
                                      "machines that trained it, and the training left in run-hours at the recent "
                                      "speed. Reads only: safe beside the running study.")
    st.add_argument("folder", metavar="DIR", help="the study folder (holds study.json)")
    st.set_defaults(func=cmd_status)


def _spec(args: argparse.Namespace) -> StudySpec:
    out = args.out or str(Path("studies") / f"{args.study}-{args.preset or 'fmnist32'}")
    spec = StudySpec(kind=args.study, out=out, preset=args.preset, config=args.config, sets=list(args.overrides),
                     seeds=args.seeds, steps=args.steps, fid_every=args.fid_every, eval_samples=args.eval_samples,
                     fid_samples=args.fid_samples, endpoint_evals=args.endpoint_evals, eval_features=args.features,
                     arms_only=[a.strip() for a in args.arms.split(",")] if args.arms is not None else None)
    spec.check()
    return spec


def _open_folder(spec: StudySpec) -> None:
    """Create the study folder with study.json, or check that an existing one holds this study."""
    folder = Path(spec.out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file; --out names the study folder")
    if (folder / SPEC_FILE).is_file():
        added = spec.extends(read_spec(folder))
        if not added:
            return
        log.warning(f"note: extending the study in {folder}: {', '.join(added)}; its finished runs are kept")
    elif folder.is_dir() and any(folder.iterdir()):
        raise UsageError(f"--out {folder} exists and is not a study folder (no {SPEC_FILE}); choose another --out")
    import json
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / SPEC_FILE, json.dumps(spec.to_json(), indent=2) + "\n")


def _check_jobs(jobs: int) -> None:
    if not 1 <= jobs <= 64:
        raise UsageError(f"--jobs {jobs}: choose 1..64")


def _finish(folder: str | Path, spec: StudySpec, out: Path | None = None) -> dict:
    results = collect(spec)
    written = write_results(out or folder, results)
    finished = sum(r["status"] == "finished" for r in results["runs"])
    log.info(f"{finished} of {len(results['runs'])} runs in the results; wrote " + ", ".join(str(p) for p in written))
    md = (Path(out or folder) / RESULTS_MD).read_text(encoding="utf-8")
    primary = [t for t in md.split("\n## ") if "primary endpoint" in t.split("\n", 1)[0]][:1]
    if primary:
        print("\n## " + primary[0].rstrip())  # the result table: printed whatever the level
    return results


def cmd_study(args: argparse.Namespace) -> int:
    _check_jobs(args.jobs)
    spec = _spec(args)
    _open_folder(spec)
    if args.list:
        for arm, seed in spec.runs():
            print(shlex.join(spec.train_command(arm, seed)))  # the result: printed whatever the level
        return 0
    log.info(f"study {spec.kind}: {len(spec.arms())} arms x {spec.seeds} seeds, {spec.total_steps} steps each, in "
             f"{spec.out}")
    failed = run_study(spec, jobs=args.jobs, progress=not args.no_progress,
                       on_done=lambda name: write_results(spec.out, collect(spec)))  # results grow run by run
    _finish(spec.out, spec)
    if failed:
        raise StudyFailed(f"{plural(len(failed), 'run')} failed: {', '.join(failed)} (logs in {Path(spec.out) / 'logs'}); "
                          "the results hold the others; re-run the same command to retry them")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    _check_jobs(args.jobs)
    spec = read_spec(args.folder)
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; --out names a folder")
        out.mkdir(parents=True, exist_ok=True)
    if not args.no_evaluate:
        failed = run_study(spec, jobs=args.jobs, progress=not args.no_progress, phases=frozenset({"evaluate"}))
        if failed:
            log.warning(f"evaluation failed for {', '.join(failed)}; they are left out")
    _finish(args.folder, spec, Path(args.out) if args.out else None)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sagan.study.status import status_lines, study_status

    spec = read_spec(args.folder)
    for line in status_lines(spec, study_status(spec)):
        print(line)  # the result: printed whatever the level
    return 0

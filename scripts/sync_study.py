"""Copy a study's small results into the repository, so a study that runs for days on machines that
come and go loses no finished run.

    python scripts/sync_study.py STUDY_DIR DEST [--commit]

DEST (e.g. docs/studies/attention-fmnist32-paired) receives study.json, results.json, results.md and
the figures, and for every run that is done (trained and evaluated) its small files: config.yaml,
version.json (the code and the machines that trained it), metrics.csv, the final evaluation record
(eval/) and the study's log record (logs/RUN.json); no checkpoints. DEST is itself a study folder: ``sagan study collect DEST --no-evaluate`` summarises it,
and copying it to a new machine's study folder before re-running the study command makes the runner
skip the runs it holds (a run counts as done when its evaluation at the last step is there).
``--commit`` commits DEST (only DEST) with git.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from sagan.runs.folder import RunDir
from sagan.study.arms import SPEC_FILE, read_spec
from sagan.study.results import (
    CURVES_PNG,
    D_SCORES_PNG,
    DIFFERENCES_PNG,
    GAMMA_PNG,
    RESULTS_JSON,
    RESULTS_MD,
)
from sagan.study.runner import LOGS_DIR, evaluation_file, run_state


def _copy(src: Path, dst: Path) -> bool:
    """Copy when new or changed; True when copied."""
    if not src.is_file() or (dst.is_file() and dst.read_bytes() == src.read_bytes()):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return True


def sync(study: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Copy what is done; returns the names of the runs in DEST and of those whose files changed."""
    spec = read_spec(study)
    for name in (SPEC_FILE, RESULTS_JSON, RESULTS_MD, CURVES_PNG, D_SCORES_PNG, GAMMA_PNG, DIFFERENCES_PNG):
        _copy(study / name, dest / name)
    done, changed = [], []
    for arm, seed in spec.runs():
        if run_state(spec, arm, seed)[0] != "done":
            continue
        name = spec.run_name(arm, seed)
        run, out = RunDir(spec.run_dir(arm, seed)), RunDir(dest / "runs" / name)
        record = evaluation_file(run.path, spec.total_steps)
        for src, dst in ((run.config, out.config), (run.metrics, out.metrics), (run.version, out.version),
                         (record, out.eval / record.name),  # type: ignore[union-attr]
                         (study / LOGS_DIR / f"{name}.json", dest / LOGS_DIR / f"{name}.json")):
            if _copy(src, dst) and name not in changed:
                changed.append(name)
        done.append(name)
    return done, changed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--commit", action="store_true", help="git commit DEST (only DEST)")
    args = p.parse_args()
    done, copied = sync(args.study, args.dest)
    print(f"{args.dest}: {len(done)} finished runs ({', '.join(done) or 'none yet'})")
    if args.commit and done:
        subprocess.run(["git", "add", "--", str(args.dest)], check=True)
        changed = subprocess.run(["git", "diff", "--cached", "--quiet", "--", str(args.dest)]).returncode != 0
        if changed:
            what = f"files of {', '.join(copied)} copied" if copied else "the study's results rewritten"
            subprocess.run(["git", "commit", "-q", "-m", f"{args.dest.name}: {len(done)} finished runs; {what}",
                            "--", str(args.dest)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

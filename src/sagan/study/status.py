"""Where a long study stands (``sagan study status DIR``), read without writing anything.

A study runs for days, often paused and resumed; this says, per run, how far it got (its newest
checkpoint, and the last step it logged), when it last logged, how fast it trained, and which
machines trained it, and for the study what is left, in run-hours at the recent speed. It takes no
lock and removes nothing, so it can be run beside the study itself.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from sagan.errors import DataError
from sagan.runs.folder import RunDir, machines_and_threads, run_history
from sagan.study.arms import StudySpec
from sagan.study.runner import run_state
from sagan.viz.report import read_metrics_csv


@dataclass
class RunStatus:
    name: str
    state: str  # done, trained (not evaluated), unfinished, new
    checkpoint_step: int
    logged_step: int | None = None
    last_log_age_s: float | None = None
    images_per_s: float | None = None
    batch_size: int | None = None
    machines: list[str] = field(default_factory=list)


def _last(columns: dict, key: str) -> float | None:
    values = [v for v in columns.get(key, []) if not math.isnan(v)]
    return values[-1] if values else None


def run_status(spec: StudySpec, arm, seed: int, now: float | None = None) -> RunStatus:
    """One run's state, read only: :func:`sagan.study.runner.run_state` without its tidying, the last
    logged step and speed (metrics.csv) and the machines with their thread counts (version.json)."""
    run = RunDir(spec.run_dir(arm, seed))
    state, step = run_state(spec, arm, seed, tidy=False)
    out = RunStatus(spec.run_name(arm, seed), state, step)
    if state == "new":
        return out
    out.machines = machines_and_threads(run_history(run.path))
    out.batch_size = spec.config_of(arm, seed).train.batch_size
    try:
        columns = read_metrics_csv(run.metrics)
        logged = _last(columns, "step")
        out.logged_step = int(logged) if logged is not None else None
        out.images_per_s = _last(columns, "images_per_s")
        out.last_log_age_s = (now if now is not None else time.time()) - run.metrics.stat().st_mtime
    except (OSError, DataError):
        pass  # no metrics.csv yet, or a damaged one: the checkpoint step is what is known
    return out


def study_status(spec: StudySpec, now: float | None = None) -> list[RunStatus]:
    """Every arm x seed of ``spec``, in the order the study runs them."""
    return [run_status(spec, arm, seed, now) for arm, seed in spec.runs()]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


STATE_WORDS = {"done": "done", "trained": "trained, not evaluated", "unfinished": "part-way", "new": "not started"}


def status_lines(spec: StudySpec, rows: list[RunStatus]) -> list[str]:
    """A table of the runs and what is left, as printed by ``sagan study status``."""
    total = spec.total_steps
    counts = {s: sum(r.state == s for r in rows) for s in STATE_WORDS}
    lines = [f"study {spec.kind} in {spec.out}: {counts['done']} of {len(rows)} runs done, "
             f"{counts['unfinished']} part-way, {counts['trained']} trained and not evaluated, "
             f"{counts['new']} not started", ""]
    header = ("run", "state", "checkpoint", "logged step", "last log", "images/s", "machines")
    table = [header] + [
        (r.name, STATE_WORDS[r.state], f"{r.checkpoint_step}/{total}",
         "-" if r.logged_step is None else str(r.logged_step), _age(r.last_log_age_s),
         "-" if r.images_per_s is None else f"{r.images_per_s:.1f}", "; ".join(r.machines) or "-")
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    left = sum(total - r.checkpoint_step for r in rows if r.state in ("unfinished", "new"))
    speeds = [r.images_per_s / r.batch_size for r in rows
              if r.state == "unfinished" and r.images_per_s and r.batch_size]
    lines.append("")
    if not left:
        lines.append("no training left" + (f"; {counts['trained']} runs to evaluate" if counts["trained"] else ""))
    elif speeds:
        rate = sum(speeds) / len(speeds)  # steps/s of one run, the mean of the part-way runs' last logged speed
        lines.append(f"left: {left} steps from the newest checkpoints; at the part-way runs' last logged speed "
                     f"({rate * 60:.1f} steps/min per run) about {left / rate / 3600:.1f} run-hours, divided by the "
                     "runs that train at once, plus the evaluations")
    else:
        lines.append(f"left: {left} steps from the newest checkpoints (no part-way run has logged a speed yet)")
    return lines

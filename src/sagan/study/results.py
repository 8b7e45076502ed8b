"""A study's results from its run directories: paired comparisons, tables and figures.

``collect`` reads every arm x seed run of a study (the training-time FID curve, D's scores and the gamma
curves from ``metrics.csv``, the final scores from its ``sagan evaluate`` record, the wall time from the study's
logs), names every run that is missing, unfinished or damaged, and summarises the rest: per metric and
arm the mean and standard deviation over seeds, and for each of the study's planned comparisons
(``StudySpec.comparisons``) the per-seed paired differences with their t interval and exact sign-flip
p-value (``sagan.study.stats``). The primary endpoint, fixed before the runs, is the training-time FID
averaged over the last ``endpoint_evals`` evaluations (``endpoint_fid``); its p-values are Holm-adjusted
across the comparisons. Every other metric is secondary and reported unadjusted.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sagan.fileio import atomic_write_text
from sagan.metrics.naming import (
    FEATURE_METRICS,
    bare_metric,
    better,
    features_title,
    metric_features,
    metric_label,
    metric_title,
)
from sagan.runs.folder import RunDir, code_version, history_machines, machines_and_threads, run_history
from sagan.study.arms import STUDIES, StudySpec
from sagan.study.runner import LOGS_DIR, evaluation_file, run_state
from sagan.study.stats import ALPHA, MIN_SEEDS, compare, holm, verdict
from sagan.viz.report import read_metrics_csv
from sagan.viz.study import plot_curves, plot_d_scores, plot_differences, plot_gammas, write_study_report

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CURVES_PNG = "curves.png"
GAMMA_PNG = "gamma.png"
D_SCORES_PNG = "d_scores.png"
DIFFERENCES_PNG = "differences.png"
# D's margin, mean D(real) - D(fake), is averaged over the logged steps of this last fraction of a run.
D_MARGIN_TAIL = 0.1

# The primary endpoint: training-time FID (fixed latents) averaged over the evaluations at StudySpec.endpoint_steps.
PRIMARY = "endpoint_fid"
# Final metrics in the tables, in order (bare names; the evaluation record's keys carry the features).
# Their titles, and the study's own metrics', are in sagan.metrics.naming.
TABLE_METRICS = ("fid", "kid_mean", "is_mean", "class_accuracy", "precision", "recall")
# What the study computed its own numbers over, said after their titles.
DETAILS = {"minutes": "training, tracked FID, final evaluation",
           "d_margin": f"mean D(real) - D(fake), last {D_MARGIN_TAIL:.0%} of steps"}


@dataclass
class RunResult:
    arm: str
    seed: int
    dir: str
    status: str  # finished, missing, unfinished, not evaluated, damaged
    problem: str | None = None
    step: int = 0
    features: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # bare names: fid, is_mean, ...
    curve: list[list[float]] = field(default_factory=list)  # [step, tracked FID]
    gammas: dict[str, list[list[float]]] = field(default_factory=dict)  # layer -> [step, gamma]
    d_scores: dict[str, list[list[float]]] = field(default_factory=dict)  # real / fake -> [step, mean D score]
    seconds: dict[str, float] = field(default_factory=dict)  # train, evaluate (wall, from the study's logs)
    machines: list[str] = field(default_factory=list)  # the processors that trained it (version.json)
    history: list[dict[str, Any]] = field(default_factory=list)  # start and resumes: machine, threads, commit


def _series(columns: dict[str, np.ndarray], key: str) -> list[list[float]]:
    """[step, value] where the column ``key`` of metrics.csv has a value."""
    steps, values = columns["step"], columns[key]
    return [[float(a), float(b)] for a, b in zip(steps, values) if not (math.isnan(a) or math.isnan(b))]


def _seconds(logs: Path, name: str) -> dict[str, float]:
    path = logs / f"{name}.json"
    out: dict[str, float] = {}
    try:
        segments = json.loads(path.read_text(encoding="utf-8"))["segments"] if path.is_file() else []
    except (OSError, ValueError, KeyError, TypeError):
        return out
    for seg in segments:
        kind = "evaluate" if seg.get("what") == "evaluate" else "train"
        out[kind] = out.get(kind, 0.0) + float(seg.get("seconds", 0.0))
    return out


def read_run(spec: StudySpec, arm_name: str, seed: int) -> RunResult:
    """One run's numbers, or its status and what is wrong with it."""
    arm = spec.arm(arm_name)
    d = spec.run_dir(arm, seed)
    res = RunResult(arm_name, seed, str(d), "finished")
    res.seconds = _seconds(Path(spec.out) / LOGS_DIR, spec.run_name(arm, seed))
    state, step = run_state(spec, arm, seed)
    res.step = step
    if state == "new":
        res.status, res.problem = "missing", "not started (no run directory)"
        return res
    res.history = run_history(d)
    res.machines = history_machines(res.history)
    if state == "unfinished":
        res.status, res.problem = "unfinished", f"trained to step {step} of {spec.total_steps}"
        return res
    try:
        cfg = yaml.safe_load(RunDir(d).config.read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError, yaml.YAMLError) as e:
        res.status, res.problem = "damaged", f"config.yaml cannot be read ({type(e).__name__})"
        return res
    try:
        columns = read_metrics_csv(RunDir(d).metrics)
        if "step" not in columns or not len(columns["step"]):
            raise ValueError("no rows with a step column")
    except (OSError, ValueError, csv.Error) as e:
        res.status, res.problem = "damaged", f"metrics.csv cannot be read ({str(e).splitlines()[0][:80] or type(e).__name__})"
        return res
    # the training-time FID: eval/fid, or eval/fid_fmnist on the Fashion-MNIST classifier's features
    fid_col = next((k for k in columns if k.startswith("eval/") and (metric_features(k) or ("",))[0] == "fid"), None)
    res.curve = _series(columns, fid_col) if fid_col else []
    res.gammas = {k[len("gamma/"):]: _series(columns, k) for k in columns if k.startswith("gamma/")}
    res.d_scores = {k: _series(columns, f"d_{k}") for k in ("real", "fake") if f"d_{k}" in columns}
    if state == "trained":
        res.status, res.problem = "not evaluated", "trained, no 'sagan evaluate' record yet"
        return res
    path = evaluation_file(d, spec.total_steps)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
        features = record["extractor"]["name"]
        metrics = {bare_metric(k, features): float(v) for k, v in record["metrics"].items()
                   if isinstance(v, (int, float))}
        res.seconds.setdefault("evaluate", float(record.get("seconds", 0.0)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        res.status, res.problem = "damaged", f"{path.name if path else 'evaluation record'} cannot be read ({type(e).__name__})"
        return res
    res.features = features
    res.metrics = metrics
    if res.curve:
        res.metrics["best_tracked_fid"] = min(v for _, v in res.curve)
        at = dict((int(step), v) for step, v in res.curve)
        if all(step in at for step in spec.endpoint_steps):
            res.metrics[PRIMARY] = float(np.mean([at[step] for step in spec.endpoint_steps]))
    margin = d_margin(res.d_scores, spec.total_steps)
    if margin is not None:
        res.metrics["d_margin"] = margin
    total = sum(res.seconds.values())
    if total > 0:
        res.metrics["minutes"] = total / 60
    return res


def d_margin(d_scores: dict[str, list[list[float]]], total_steps: int) -> float | None:
    """Mean of D(real) - D(fake) over the logged steps of the last ``D_MARGIN_TAIL`` of training (None
    without both series there): how far D separates the training images from G's, which keeps growing
    when D memorises a small data set."""
    real, fake = (dict((s, v) for s, v in d_scores.get(k, [])) for k in ("real", "fake"))
    steps = [s for s in real if s in fake and s > (1 - D_MARGIN_TAIL) * total_steps]
    return float(np.mean([real[s] - fake[s] for s in steps])) if steps else None


def summarise(runs: list[RunResult], arms: list[str]) -> dict[str, dict[str, Any]]:
    """metric -> arm -> {mean, std, n, values, seeds} over the finished runs."""
    finished = [r for r in runs if r.status == "finished"]
    names = [m for m in (PRIMARY, *TABLE_METRICS, "best_tracked_fid", "d_margin", "minutes")
             if any(m in r.metrics for r in finished)]
    out: dict[str, dict[str, Any]] = {}
    for m in names:
        table = {}
        for a in arms:
            got = sorted((r.seed, r.metrics[m]) for r in finished if r.arm == a and m in r.metrics)
            if got:
                vals = [v for _, v in got]
                table[a] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                            "n": len(vals), "values": vals, "seeds": [s for s, _ in got]}
        out[m] = table
    return out


def compare_arms(runs: list[RunResult], spec: StudySpec, metrics: list[str]) -> list[dict[str, Any]]:
    """Every planned comparison on every metric, paired by seed; the primary endpoint's p-values
    Holm-adjusted across the comparisons, and its verdict (:func:`sagan.study.stats.verdict`)."""
    finished = [r for r in runs if r.status == "finished"]

    def by_seed(arm: str, metric: str) -> dict[int, float]:
        return {r.seed: r.metrics[metric] for r in finished if r.arm == arm and metric in r.metrics}

    out = [{"arm": c.arm, "reference": c.reference, "question": c.question,
            "metrics": {m: compare(by_seed(c.arm, m), by_seed(c.reference, m)) for m in metrics if m != "minutes"}}
           for c in spec.comparisons()]
    primary = [c["metrics"].get(PRIMARY) for c in out]
    exact_holm = holm([c["p"] if c else None for c in primary])
    t_holm = holm([c["p_t"] if c else None for c in primary])
    for c, adjusted, t_adjusted in zip(primary, exact_holm, t_holm):
        if c is not None:
            c.update(p_holm=adjusted, p_t_holm=t_adjusted, verdict=verdict(c["diff"], t_adjusted, c["n"]))
    return out


def collect(spec: StudySpec) -> dict[str, Any]:
    """Everything a study's folder holds, as one JSON-able record (``results.json``)."""
    arms = spec.arms()
    runs = [read_run(spec, a.name, s) for a, s in spec.runs()]
    features = next((r.features for r in runs if r.features), None)
    baseline = arms[0].name
    summary = summarise(runs, [a.name for a in arms])
    return {
        "study": spec.kind, "description": STUDIES[spec.kind][1], "spec": spec.to_json(),
        "baseline": baseline, "features": features, "primary": PRIMARY, "endpoint_steps": spec.endpoint_steps,
        "arms": [{"name": a.name, "description": a.description, "overrides": list(a.overrides),
                  "commands": [spec.train_command(a, s) for s in range(spec.seeds)]} for a in arms],
        "runs": [asdict(r) for r in runs],
        "summary": summary,
        "comparisons": compare_arms(runs, spec, list(summary)),
        "versions": code_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- results.md

def heading(metric: str, features: str | None = None, short: bool = False) -> str:
    """A metric's heading in the tables: its label (:func:`sagan.metrics.naming.metric_label`: the
    features when known, what the study computed it over) or, ``short``, its title alone; the
    primary endpoint says it is one."""
    label = metric_title(metric) if short else metric_label(metric, features, DETAILS.get(metric))
    return f"primary endpoint: {label}" if metric == PRIMARY else label


def _digits(scale: float, metric: str) -> int:
    a = abs(scale)
    return 5 if metric == "kid_mean" else 3 if a < 10 else 2 if a < 100 else 1


def _num(v: float | None, metric: str, scale: float | None = None) -> str:
    """``v`` with the decimals that suit ``scale`` (default ``v``: a table's mean sets its row's)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{_digits(v if scale is None else scale, metric)}f}"


def intro_lines(results: dict[str, Any]) -> list[str]:
    spec = results["spec"]
    runs = results["runs"]
    finished = sum(r["status"] == "finished" for r in runs)
    steps = results.get("endpoint_steps") or []
    base_run = (f"Base run: preset {spec['preset'] or 'fmnist32'}" + (f", config {spec['config']}" if spec["config"] else "")
                + (f", --set {' '.join(spec['sets'])}" if spec["sets"] else "")
                + f"; {spec['steps'] or 'the config’s'} steps; seeds 0-{spec['seeds'] - 1}. Arms are paired: with the "
                "same seed every arm starts from the same backbone weights and sees the same data and noise; only "
                "its own layers or settings differ.")
    endpoint = (f"Primary endpoint (fixed before the runs): the training-time FID on {spec.get('fid_samples')} "
                f"samples of fixed latents (EMA generator), averaged over steps {', '.join(map(str, steps))}. "
                f"Secondary: the final 'sagan evaluate' on {spec['eval_samples']} samples, and the rest.")
    stats = (f"{finished} of {len(runs)} runs finished and evaluated. Comparisons are per-seed paired differences "
             f"(arm - reference): their mean, a 95% t interval (only from n = {MIN_SEEDS} pairs on), the exact "
             "two-sided sign-flip permutation p, the paired t test's p, and for the primary endpoint both "
             "Holm-adjusted across the comparisons. An interval marked * excludes 0 (unadjusted). The verdict "
             f"(a rule of the code, fixed before the runs): a primary comparison is resolved when its "
             f"Holm-adjusted t-test p is below {ALPHA}; otherwise not resolved, which is not 'no effect'. With "
             f"{MIN_SEEDS} seeds the exact p cannot go below {2 / 2 ** MIN_SEEDS:g}, so it checks, it does not decide.")
    return [f"{results['description']}.", base_run, endpoint, stats, machines_line(runs)]


def machines_line(runs: list[dict[str, Any]]) -> str:
    """Which processors trained the study's runs (their version.json), with the runs of each: the
    kernels' float results and the wall minutes depend on it, so a study that moved between machines says so."""
    by: dict[str, list[str]] = {}
    for r in runs:
        for m in r.get("machines") or []:
            by.setdefault(m, []).append(Path(r["dir"]).name)
    if not by:
        return "Machines: no run records one yet."
    parts = [f"{m}: {', '.join(names)}" for m, names in sorted(by.items(), key=lambda kv: kv[0] == "not recorded")]
    note = (" ('not recorded': started or resumed by a version that did not record the machine)"
            if "not recorded" in by else "")
    return ("Machines that trained the runs (a run resumed on another machine is under each): " + "; ".join(parts) + "." + note)


def _interval(row: dict[str, Any], metric: str, scale: float) -> str:
    ci = row.get("ci95")
    if ci is None:
        return f"n < {MIN_SEEDS}: no interval"
    verdict = "" if ci[0] <= 0 <= ci[1] else " *"
    return f"[{_num(ci[0], metric, scale)}, {_num(ci[1], metric, scale)}]{verdict}"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def summary_tables(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The tables of results.md and the study report: the arms, the summary, then the comparisons per metric."""
    feats = results["features"]
    tables = [{"title": "Arms", "short": "Arms", "header": ["arm", "what it changes", "overrides"],
               "rows": [[a["name"], a["description"], " ".join(a["overrides"])] for a in results["arms"]]}]
    summary = results["summary"]
    if summary:  # every metric at a glance: mean ± std per arm
        metrics = list(summary)
        rows = []
        for a in results["arms"]:
            cells = []
            for m in metrics:
                row = summary[m].get(a["name"])
                cells.append("" if row is None else _num(row["mean"], m) + (
                    f" ± {_num(row['std'], m, row['mean'])}" if row["std"] is not None else "") + f" ({row['n']})")
            rows.append([a["name"], *cells])
        on_features = ", ".join(metric_title(m) for m in TABLE_METRICS if m in FEATURE_METRICS)
        on = f"; {on_features} on {features_title(feats)}" if feats else ""
        tables.append({"title": f"Summary (mean ± std over seeds (n){on})", "short": "Summary",
                       "header": ["arm", *[heading(m, short=True) for m in metrics]], "rows": rows})
    for metric in summary:
        if metric == "minutes":
            continue
        primary = metric == results.get("primary")
        direction = ("a symptom, not quality: a gap that keeps growing is D memorising the data"
                     if metric == "d_margin" else better(metric))
        header = ["comparison", "question", "n", "mean Δ", "95% t interval", "t p",
                  *(["t p (Holm)", "verdict", "exact p", "exact p (Holm)"] if primary else ["exact p"])]
        rows = []
        for c in results.get("comparisons", []):
            row = c["metrics"].get(metric)
            if row is None or row["n"] == 0:
                rows.append([f"{c['arm']} - {c['reference']}", c["question"], "0", *[""] * (len(header) - 3)])
                continue
            scale = summary[metric].get(c["reference"], {}).get("mean", row["diff"])
            cells = [f"{c['arm']} - {c['reference']}", c["question"], str(row["n"]), _num(row["diff"], metric, scale),
                     _interval(row, metric, scale), _p(row.get("p_t"))]
            if primary:
                cells += [_p(row.get("p_t_holm")), row.get("verdict", ""), _p(row["p"]), _p(row.get("p_holm"))]
            rows.append(cells + ([] if primary else [_p(row["p"])]))
        kind = "primary endpoint" if primary else "secondary, p unadjusted"
        tables.append({"title": f"{heading(metric, feats)} ({direction}; {kind})", "short": metric_title(metric),
                       "header": header, "rows": rows})
    return tables


def _distinct(items: list[str]) -> str:
    return "; ".join(dict.fromkeys(items)) or "not recorded"


def runs_table(results: dict[str, Any]) -> dict[str, Any]:
    """Every run of the study, one row each: its status, which machines (and threads) and which code
    trained it (its version.json: the start and every resume), the wall minutes of training and of
    the final evaluation (the study's logs), and its primary endpoint and final FID. What a reader
    needs to judge the numbers' provenance; ``note`` says how to read it."""
    header = ["run", "status", "trained on", "code", "starts", "training min", "evaluation min",
              "endpoint", "final FID"]
    rows = []
    for r in results["runs"]:
        history = r.get("history") or []
        machines = _distinct(machines_and_threads(history))
        code = _distinct([(h["commit"][:7] + ("*" if h.get("dirty") else "")) if h.get("commit") else "not recorded"
                          for h in history])
        seconds = r.get("seconds") or {}
        minutes = [f"{seconds[k] / 60:.1f}" if seconds.get(k) else "" for k in ("train", "evaluate")]
        m = r.get("metrics") or {}
        status = {"finished": "finished", "missing": "not started"}.get(r["status"], f"{r['status']}: {r['problem']}")
        rows.append([Path(r["dir"]).name, status, machines if history else "", code if history else "",
                     str(len(history)) if history else "", *minutes,
                     _num(m.get(PRIMARY), PRIMARY) if PRIMARY in m else "", _num(m.get("fid"), "fid") if "fid" in m else ""])
    note = ("Per run: the processors that trained it with their thread counts, and the code (git commit; * with "
            "local changes), each once in order over the start and every resume ('starts'); wall minutes of "
            "training (tracked FID included) and of the final evaluation, from the study's logs; the primary "
            "endpoint and the final FID. A run's numbers depend on its machines: fp32 kernels round differently "
            "on different CPUs, and the minutes depend on the CPU and on what else ran beside it.")
    return {"header": header, "rows": rows, "note": note,
            "numeric": {"starts", "training min", "evaluation min", "endpoint", "final FID"}}


def results_markdown(results: dict[str, Any]) -> str:
    lines = [f"# Study: {results['study']}", ""]
    for p in intro_lines(results):
        lines += [p, ""]
    for t in summary_tables(results):
        lines += [f"## {t['title']}", "", "| " + " | ".join(t["header"]) + " |",
                  "|" + "|".join("---" if i == 0 or t["title"] == "Arms" or t["header"][i] == "question" else "---:" for i in range(len(t["header"]))) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t["rows"]]
        lines.append("")
    runs = runs_table(results)
    lines += ["## Runs", "", runs["note"], "", "| " + " | ".join(runs["header"]) + " |",
              "|" + "|".join("---:" if h in runs["numeric"] else "---" for h in runs["header"]) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in runs["rows"]]
    lines.append("")
    lines += [f"Figures: `{CURVES_PNG}` (training-time FID per arm: mean over seeds, band min-max), "
              f"`{D_SCORES_PNG}` (D's mean score on real and on generated images per arm), "
              f"`{GAMMA_PNG}` (gamma of every attention / bottleneck layer, one line per run), "
              f"`{DIFFERENCES_PNG}` (the primary endpoint's paired differences, seed by seed, with mean and "
              "t interval)."]
    return "\n".join(lines) + "\n"


def write_report(folder: str | Path, results: dict[str, Any]) -> Path:
    """The study's report.html (``sagan report STUDY``): tables, figures, and links to the runs' reports."""
    folder = Path(folder)
    table = runs_table(results)
    runs = []
    for r, row in zip(results["runs"], table["rows"]):
        report = RunDir(Path(r["dir"])).report
        rel = report.relative_to(folder) if report.is_file() and report.is_relative_to(folder) else None
        runs.append({"name": row[0], "cells": row[1:], "report": str(rel) if rel else None})
    figures = [("Training-time FID per arm (mean over seeds, band min-max)", folder / CURVES_PNG),
               ("D's mean score on real and on generated images per arm", folder / D_SCORES_PNG),
               ("gamma of every attention / bottleneck layer", folder / GAMMA_PNG),
               ("Paired differences per seed on the primary endpoint", folder / DIFFERENCES_PNG)]
    return write_study_report(folder, f"Study: {results['study']}", intro_lines(results), summary_tables(results),
                              figures, runs, table["header"][1:], table["note"])


def write_results(folder: str | Path, results: dict[str, Any]) -> list[Path]:
    """results.json, results.md, curves.png, d_scores.png, gamma.png and differences.png in the study
    folder (each written atomically)."""
    folder = Path(folder)
    atomic_write_text(folder / RESULTS_JSON, json.dumps(results, indent=1) + "\n")
    atomic_write_text(folder / RESULTS_MD, results_markdown(results))
    written = [folder / RESULTS_JSON, folder / RESULTS_MD]
    arms = [a["name"] for a in results["arms"]]
    for path, draw in ((folder / CURVES_PNG, plot_curves), (folder / D_SCORES_PNG, plot_d_scores),
                       (folder / GAMMA_PNG, plot_gammas)):
        if draw(results["runs"], arms, path, results["features"]):
            written.append(path)
    primary = results.get("primary")
    if primary and plot_differences(results.get("comparisons", []), primary, folder / DIFFERENCES_PNG,
                                    heading(primary, results["features"], short=True)):
        written.append(folder / DIFFERENCES_PNG)
    return written

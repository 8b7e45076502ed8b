"""Figures and the HTML page of a study (``sagan study``, ``sagan report STUDY``).

Works on plain data (the run records of ``results.json`` and already formatted tables), so this
layer knows nothing of how studies are run.
"""
from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import numpy as np

from sagan.extras import requires
from sagan.fileio import atomic_path, atomic_write_text
from sagan.metrics.naming import metric_label


def _pyplot():
    with requires("figures"):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    return plt


def _band(series: list[list[list[float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps where every series has a value, and the mean, min and max over the series there."""
    if not series:
        return None
    common = set.intersection(*({s for s, _ in ser} for ser in series))
    if not common:
        return None
    steps = np.array(sorted(common))
    vals = np.array([[dict((s, v) for s, v in ser)[st] for st in steps] for ser in series])
    return steps, vals.mean(0), vals.min(0), vals.max(0)


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _colours(arms: list[str]) -> dict[str, Any]:
    with requires("figures"):
        from matplotlib import colormaps
    cmap = colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(arms)}


def _plot_band(ax, series: list[list[list[float]]], colour: Any, label: str, alpha: float, **line) -> bool:
    """The mean of ``series`` as a line, and their min-max as a band when there are several; False
    when they share no step."""
    band = _band(series)
    if band is None:
        return False
    steps, mean, lo, hi = band
    ax.plot(steps, mean, color=colour, label=label, **line)
    if len(series) > 1:
        ax.fill_between(steps, lo, hi, color=colour, alpha=alpha, linewidth=0)
    return True


def plot_curves(runs: list[dict[str, Any]], arms: list[str], path: Path, features: str | None) -> bool:
    """Training-time FID against step, one line per arm (mean over its seeds, band min-max);
    False (and no file) when no run has a curve."""
    plt = _pyplot()
    colours = _colours(arms)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    drawn = False
    for arm in arms:
        series = [r["curve"] for r in runs if r["arm"] == arm and r["curve"]]
        drawn |= _plot_band(ax, series, colours[arm], f"{arm} ({_seeds(len(series))})", 0.18, marker="o", ms=3)
    if not drawn:
        plt.close(fig)
        return False
    ax.set(xlabel="generator step", ylabel=metric_label("fid", features),
           title="Training-time FID (EMA generator): mean over seeds, band min-max")
    ax.set_yscale("log")
    with requires("figures"):
        from matplotlib.ticker import FormatStrFormatter
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 20, 30, not 2 x 10^1
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _smooth(series: list[list[float]], window: int) -> list[list[float]]:
    """A trailing moving mean over ``window`` points (fewer at the start)."""
    values = np.cumsum([0.0] + [v for _, v in series])
    return [[s, (values[i + 1] - values[max(0, i + 1 - window)]) / (i + 1 - max(0, i + 1 - window))]
            for i, (s, _) in enumerate(series)]


def plot_d_scores(runs: list[dict[str, Any]], arms: list[str], path: Path, features: str | None = None) -> bool:  # noqa: ARG001
    """D's mean score on real images (solid) and on generated ones (dashed) against step, one colour per
    arm (mean over seeds, band min-max; a moving mean over 1/20 of the run); False (and no file) when no
    run logged them. The gap between the two is what grows when D memorises a small data set."""
    plt = _pyplot()
    colours = _colours(arms)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    drawn = False
    for arm in arms:
        for kind, style in (("real", "-"), ("fake", "--")):
            series = [r.get("d_scores", {}).get(kind) for r in runs if r["arm"] == arm]
            series = [_smooth(s, max(1, len(s) // 20)) for s in series if s]
            label = f"{arm}, D({'real' if kind == 'real' else 'G(z)'}) ({_seeds(len(series))})"
            drawn |= _plot_band(ax, series, colours[arm], label, 0.12, ls=style, lw=1.4)
    if not drawn:
        plt.close(fig)
        return False
    ax.axhline(0, color="#999", lw=0.8)
    ax.set(xlabel="generator step", ylabel="mean D score (logit)",
           title="D on real (solid) and generated (dashed) images: mean over seeds, band min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_gammas(runs: list[dict[str, Any]], arms: list[str], path: Path, features: str | None = None) -> bool:  # noqa: ARG001
    """gamma of every attention / bottleneck layer against step: one panel per layer, one line per
    run (coloured by arm); False (and no file) when no run has such a layer."""
    layers = sorted({name for r in runs for name in r["gammas"]}, key=lambda n: (n[0] != "G", n))
    if not layers:
        return False
    plt = _pyplot()
    colours = _colours(arms)
    cols = min(3, len(layers))
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax, layer in zip(axes.flat, layers):
        for arm in arms:
            # One line per seed: gamma's sign is a free choice of each run (v's weights can absorb it),
            # so a mean over seeds can sit near 0 while every run's |gamma| grows.
            seeds = [r for r in runs if r["arm"] == arm and layer in r["gammas"]]
            for i, r in enumerate(seeds):
                steps, values = zip(*r["gammas"][layer])
                ax.plot(steps, values, color=colours[arm], lw=1.2, alpha=0.85,
                        label=f"{arm} ({_seeds(len(seeds))})" if i == 0 else None)
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    fig.suptitle("gamma (y = gamma * o + x) per layer, one line per run", fontsize=10)
    _save(fig, path)
    return True


def plot_differences(comparisons: list[dict[str, Any]], metric: str, path: Path, label: str) -> bool:
    """The primary endpoint's paired comparisons, one row each: every seed's difference (arm -
    reference) as a dot numbered by its seed, their mean as a diamond, the 95% t interval as a bar
    where there is one, 0 as a line, and n with the verdict on the right. False (and no file) when
    no comparison has a pair yet."""
    rows = [(c, c["metrics"].get(metric)) for c in comparisons]
    rows = [(c, r) for c, r in rows if r and r["n"]]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.7 * len(rows) + 1.4), layout="constrained")
    for y, (c, r) in enumerate(reversed(rows)):
        if r.get("ci95"):
            ax.plot(r["ci95"], [y, y], color="#1f77b4", lw=3, alpha=0.5, solid_capstyle="butt",
                    label="95% t interval" if y == 0 else None)
        ax.scatter(r["diffs"], [y] * len(r["diffs"]), s=22, color="#444", zorder=3,
                   label="one seed's difference" if y == 0 else None)
        for seed, d in zip(r["seeds"], r["diffs"]):
            ax.annotate(str(seed), (d, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
        ax.scatter([r["diff"]], [y], marker="D", s=40, color="#d62728", zorder=4, label="mean" if y == 0 else None)
        verdict = r.get("verdict") or ""
        ax.annotate(f"n = {r['n']}" + (f"; {verdict}" if verdict else ""), (1.01, y), xycoords=("axes fraction", "data"),
                    va="center", fontsize=8)
    ax.axvline(0, color="#999", lw=0.9)
    ax.set_yticks(range(len(rows)), [f"{c['arm']} - {c['reference']}" for c, _ in reversed(rows)])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set(xlabel=f"difference in {label} (arm - reference)",
           title="Paired differences per seed on the primary endpoint (numbers: seeds)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.08), ncol=3, frameon=False)
    _save(fig, path)
    return True


def _uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_study_report(folder: Path, title: str, intro: list[str], tables: list[dict[str, Any]],
                       figures: list[tuple[str, Path]], runs: list[dict[str, Any]], runs_header: list[str],
                       runs_note: str = "") -> Path:
    """``folder/report.html``: one self-contained page with the study's tables, figures and runs.

    ``tables``: ``{"title", "header", "rows"}`` with cells already formatted; ``runs``: ``{"name",
    "cells", "report"}`` (``cells`` formatted, under ``runs_header``; ``report`` a path relative to
    ``folder`` or None), explained by ``runs_note``."""
    from sagan.viz.report import template_environment

    images = [(caption, uri) for caption, p in figures if (uri := _uri(p))]
    html = template_environment().get_template("study.html.j2").render(
        title=title, intro=intro, tables=tables, images=images, runs=runs, runs_header=runs_header,
        runs_note=runs_note,
        generated=time.strftime("%Y-%m-%d %H:%M"))
    out = Path(folder) / "report.html"
    atomic_write_text(out, html)
    return out

"""The report's training charts: ``metrics.csv`` read into columns, the columns grouped into charts
(losses, D's outputs, attention gammas, FID and IS per feature extractor, then the rest), each
chart drawn with matplotlib as a PNG ``data:`` URI.

Metrics that depend on the feature extractor carry its name as a suffix (``eval/fid_fmnist``: the
Fashion-MNIST classifier; no suffix: Inception; :mod:`sagan.metrics.naming`), and each chart's
title says which (:func:`sagan.metrics.naming.metric_label`). Older runs wrote ``eval/fid``
whatever the features: :func:`plain_metric_features` says which from their best.pt record or config.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sagan.data.datasets import dataset_spec
from sagan.errors import DataError, UsageError
from sagan.extras import requires
from sagan.metrics.naming import (
    STANDARD_FEATURES,
    better,
    metric_features,
    metric_label,
    metric_title,
)
from sagan.sampling import LoadedRun
from sagan.viz.report.html import data_uri


def read_metrics_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of ``metrics.csv`` as float arrays (NaN where a row has no value); a file that is not
    UTF-8 CSV text (damaged, or another file under that name) is a one-line DataError."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x}): it is damaged or "
                        "not the metrics.csv training wrote; restore it or move it away (the report then has no "
                        "training curves)") from None
    except csv.Error as e:
        raise DataError(f"{path} cannot be read as CSV ({e}): it is damaged; restore it or move it away (the "
                        "report then has no training curves)") from None

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan
    return {k: np.array([num(r.get(k)) for r in rows], dtype=np.float64) for k in keys}


@dataclass
class Chart:
    title: str
    uri: str
    columns: list[str]


def plain_metric_features(run: LoadedRun) -> str:
    """The features behind a run's un-suffixed ``eval/fid``: Inception for current runs, which name
    the Fashion-MNIST classifier's as ``eval/fid_fmnist``; older runs wrote ``eval/fid`` for
    either, so their best.pt record (when these are its weights) or their config says which."""
    features = (run.tracked_fid or {}).get("features")
    if isinstance(features, str) and features:
        return features
    features = run.cfg.train.fid_features
    if features == "auto":
        try:
            features = dataset_spec(run.cfg.data.dataset).features
        except UsageError:
            return STANDARD_FEATURES
    return features or STANDARD_FEATURES


def curve_groups(columns: list[str], plain: str = STANDARD_FEATURES) -> list[tuple[str, list[str], str]]:
    """(title, columns, y-label) of each chart, from the column names of metrics.csv; ``plain``:
    the features behind un-suffixed FID/IS columns (``plain_metric_features``)."""
    cols = [c for c in columns if c != "step"]
    groups: list[tuple[str, list[str], str]] = []
    used: set[str] = set()

    def take(title: str, names: list[str], ylabel: str) -> None:
        names = [n for n in dict.fromkeys(names) if n in cols and n not in used]
        if names:
            groups.append((title, names, ylabel))
            used.update(names)
    take("Hinge losses", ["loss_d", "loss_g"] + [c for c in cols if c.startswith("loss")], "loss")
    take("Discriminator outputs D(real) / D(fake)", ["d_real", "d_fake"], "mean D output")
    take("Attention gamma (weight of the attention branch)", [c for c in cols if c.startswith("gamma")], "gamma")
    found = {c: metric_features(c, plain) for c in cols}
    for features in dict.fromkeys(f[1] for f in found.values() if f):  # in the order the columns come
        take(metric_label("fid", features, better("fid")),
             [c for c, f in found.items() if f and f[0] in ("fid", "best_fid") and f[1] == features], metric_title("fid"))
        take(metric_label("is", features, better("is")),
             [c for c, f in found.items() if f and f[0] in ("is", "is_mean") and f[1] == features], metric_title("is"))
    take(metric_label("fid", None, better("fid")), [c for c in cols if "fid" in c.lower()], metric_title("fid"))
    for c in cols:
        if c not in used:
            take(c, [c], c)
    return groups


def _png_bytes(fig) -> bytes:
    with requires("figures"):
        import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def training_charts(columns: dict[str, np.ndarray], plain: str = STANDARD_FEATURES) -> list[Chart]:
    """One chart per group of ``curve_groups`` against ``step`` (markers where the points are
    sparse); none without a step column or rows."""
    with requires("figures"):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    step = columns.get("step")
    if step is None or len(step) == 0:
        return []
    charts = []
    for title, names, ylabel in curve_groups(list(columns), plain):
        fig, ax = plt.subplots(figsize=(5.6, 3.2), layout="constrained")
        for name in names:
            y = columns[name]
            ok = ~np.isnan(y) & ~np.isnan(step)
            if not ok.any():
                continue
            sparse = ok.sum() <= 30 or ok.mean() < 0.5
            ax.plot(step[ok], y[ok], marker="o" if sparse else None, markersize=3, linewidth=1.4, label=name)
        if names[0].startswith("gamma") or names[0] in ("d_real", "d_fake"):
            ax.axhline(0.0, color="#999", linewidth=0.8, linestyle=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
        charts.append(Chart(title, data_uri(_png_bytes(fig)), names))
    return charts

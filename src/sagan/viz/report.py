"""A self-contained HTML report of a model: ``build_report(source)`` writes ``report.html``.

The source is anything ``sagan.sampling.load_run`` loads. A run directory (or a checkpoint in
one) has a training record - metrics.csv, the training sample grids, evaluation JSON - and the
report shows it; an exported folder or a shipped model has none, and the report shows the model
(config, provenance, samples, G's attention) with a note where the training record would be.

Each part of the page comes from one ``*_section`` function (overview, config, provenance, sample
grids, evolution, charts, metrics tables, attention figures, explorer); ``build_report`` gathers
them into a ``Report`` and ``render`` fills the template.

Metrics that depend on the feature extractor carry its name as a suffix (``eval/fid_fmnist``,
``fid_fmnist``: the Fashion-MNIST classifier; no suffix: Inception; ``sagan.metrics.naming``);
charts and tables say which.
Older runs wrote ``eval/fid`` whatever the features: their best.pt record or config says which.

Everything the page shows is inside the one file: images as ``data:`` URIs, plots rendered with
matplotlib to PNG, attention maps for the interactive explorer precomputed and embedded as
base64 uint8 arrays, plain JavaScript and CSS inline; no network access is needed to view it.

The page is rendered with Jinja2 with autoescaping on, so run names, class names, paths and
config strings are HTML-escaped; data for the scripts goes into ``<script type="application/json">``
blocks through ``script_json``, which escapes ``<``, ``>`` and ``&`` so that no string can end
the script element.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from sagan.data.datasets import dataset_spec, to_uint8
from sagan.data.grid import grid_png
from sagan.errors import DataError, UsageError, plural
from sagan.extras import requires
from sagan.fileio import atomic_write_text
from sagan.metrics.naming import (
    FEATURE_METRICS,
    METRIC_TITLES,
    STANDARD_FEATURES,
    features_title,
    metric_label,
)
from sagan.models import count_parameters
from sagan.models.export import export_info
from sagan.runs.folder import RunDir
from sagan.sampling import LoadedRun, generate, load_run
from sagan.viz import attention as A
from sagan.viz.neighbours import NeighbourRow, neighbours_section

with requires("figures", "the HTML report"):
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup, escape

SAMPLE_STEP_RE = re.compile(r"^step_(\d+)\.png$")
METRICS_JSON_PATTERNS = ("evaluation*.json", "eval*.json", "metrics*.json", "eval/*.json", "eval/**/*.json",
                         "evaluation/*.json")
EXPLORER_BUDGET_BYTES = 8 * 2 ** 20  # uint8 attention weights embedded for the explorer


# --------------------------------------------------------------------------- small helpers

def html_escape(text: str) -> str:
    """What the template's autoescaping makes of ``text``."""
    return str(escape(text))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def b64(arr: np.ndarray) -> str:
    """Little-endian bytes of ``arr``, base64 (what the page's JavaScript decodes)."""
    return base64.b64encode(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()).decode("ascii")


_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj: Any) -> str:
    """JSON safe to place inside a ``<script>`` element (no ``</script>``, ``<!--`` or ``&``)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group(0)], text)


def _png_bytes(fig) -> bytes:
    with requires("figures"):
        import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- metrics.csv and curves

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


def metric_features(key: str, plain: str = STANDARD_FEATURES) -> tuple[str, str] | None:
    """(metric, features) of a key named by ``sagan.metrics.naming.metric_key``: ``eval/fid_fmnist``
    -> ("fid", "fmnist"), ``metrics.kid_mean`` -> ("kid_mean", ``plain``); None for a key that is
    no feature statistic. ``plain``: the features behind un-suffixed keys (Inception, but not for
    older runs: ``plain_metric_features``)."""
    leaf = re.split(r"[./]", key)[-1]
    if leaf in FEATURE_METRICS:
        return leaf, plain
    base, _, features = leaf.rpartition("_")
    return (base, features) if base in FEATURE_METRICS and features else None


def metric_title(key: str, plain: str = STANDARD_FEATURES) -> str | None:
    """What a person reads for a metric key: ``eval/fid_fmnist`` -> "FID (Fashion-MNIST classifier
    features)", ``class_accuracy`` -> "class accuracy"; None for keys that are no metric."""
    found = metric_features(key, plain)
    if found:
        return metric_label(*found)
    return METRIC_TITLES.get(re.split(r"[./]", key)[-1])


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
        label = features_title(features)
        take(f"FID ({label}; lower is better)",
             [c for c, f in found.items() if f and f[0] in ("fid", "best_fid") and f[1] == features], "FID")
        take(f"IS ({label}; higher is better)",
             [c for c, f in found.items() if f and f[0] in ("is", "is_mean") and f[1] == features], "IS")
    take("FID (lower is better)", [c for c in cols if "fid" in c.lower()], "FID")
    for c in cols:
        if c not in used:
            take(c, [c], c)
    return groups


def training_charts(columns: dict[str, np.ndarray], plain: str = STANDARD_FEATURES) -> list[Chart]:
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


# --------------------------------------------------------------------------- metrics JSON

@dataclass
class JsonTable:
    path: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    error: str | None = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list)) for x in v):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts/lists -> [(dotted key, formatted value)]."""
    if isinstance(obj, dict):
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        out = []
        for i, v in enumerate(obj):
            out += flatten(v, f"{prefix}[{i}]")
        return out
    return [(prefix or "value", _fmt(obj))]


def json_features(obj: Any) -> str:
    """The features behind a JSON record's un-suffixed metric keys: the extractor an older
    ``sagan evaluate`` record names, else Inception."""
    name = obj.get("extractor", {}).get("name") if isinstance(obj, dict) and isinstance(obj.get("extractor"), dict) \
        else None
    return name if isinstance(name, str) and name else STANDARD_FEATURES


def json_table(path: Path, root: Path) -> JsonTable:
    """A metrics JSON file as a table; metrics that depend on the feature extractor are labelled
    with it ("FID (Fashion-MNIST classifier features)")."""
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return JsonTable(rel, error=f"could not read: {e}")
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        plain = json_features(obj[0])
        flat = [dict(flatten(r)) for r in obj]
        cols: list[str] = []
        for r in flat:
            cols += [k for k in r if k not in cols]
        heads = [f"{metric_title(c, plain)} [{c}]" if metric_title(c, plain) else c for c in cols]
        return JsonTable(rel, heads, [[r.get(c, "") for c in cols] for r in flat])
    plain = json_features(obj)
    rows = [(k, metric_title(k, plain), v) for k, v in flatten(obj)]
    if not any(label for _, label, _ in rows):
        return JsonTable(rel, ["key", "value"], [[k, v] for k, _, v in rows])
    return JsonTable(rel, ["key", "metric", "value"], [[k, label or "", v] for k, label, v in rows])


def metrics_json_files(run_dir: Path) -> list[Path]:
    found: dict[Path, None] = {}
    for pattern in METRICS_JSON_PATTERNS:
        for p in sorted(run_dir.glob(pattern)):
            if p.is_file():
                found[p] = None
    return list(found)


# --------------------------------------------------------------------------- explorer data

def explorer_stride(side: int, n_keys: int, n_images: int, n_layers: int, budget: int) -> int:
    """Query stride (1 = every feature cell) so the embedded maps fit ``budget`` bytes per layer set."""
    stride = 1
    while stride < side and n_images * n_layers * math.ceil(side / stride) ** 2 * n_keys > budget:
        stride += 1
    return stride


def encode_layer(label: str, maps: torch.Tensor, budget: int, n_layers: int) -> dict[str, Any]:
    """(B, N, N_key) float maps -> the explorer's layer record.

    Rows are stored as uint8 scaled to the row's own peak (``peaks``, float32), for queries on
    every ``stride``-th feature cell (the centre cell of each stride x stride block).
    """
    b, n, m = maps.shape
    side = A.grid_side(n, f"{label} query count")
    kside = A.grid_side(m, f"{label} key count")
    stride = explorer_stride(side, m, b, n_layers, budget)
    centres = [min(i * stride + stride // 2, side - 1) for i in range(math.ceil(side / stride))]
    idx = torch.tensor([fy * side + fx for fy in centres for fx in centres])
    rows = maps[:, idx, :].float()  # (B, Nq, M)
    peaks = rows.amax(-1, keepdim=True).clamp_min(1e-12)
    q = (rows / peaks * 255).round().clamp(0, 255).to(torch.uint8)
    return {"label": label, "qside": side, "stride": stride, "qgrid": len(centres), "kside": kside,
            "rows": b64(q.numpy()), "peaks": b64(peaks[..., 0].numpy().astype(np.float32))}


def decode_layer(rec: dict[str, Any], n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode_layer`` (for tests): (B, Nq, M) weights and the query cells (Nq, 2) as (fx, fy)."""
    q = np.frombuffer(base64.b64decode(rec["rows"]), dtype=np.uint8)
    peaks = np.frombuffer(base64.b64decode(rec["peaks"]), dtype="<f4")
    nq = rec["qgrid"] ** 2
    w = q.reshape(n_images, nq, -1).astype(np.float64) / 255.0 * peaks.reshape(n_images, nq, 1)
    centres = [min(i * rec["stride"] + rec["stride"] // 2, rec["qside"] - 1) for i in range(rec["qgrid"])]
    cells = np.array([(fx, fy) for fy in centres for fx in centres])
    return w, cells


def explorer_data(images: torch.Tensor, titles: list[str], maps: dict[str, torch.Tensor],
                  start_points: list[tuple[int, int]], budget: int = EXPLORER_BUDGET_BYTES) -> dict[str, Any]:
    res, channels = images.shape[-1], images.shape[1]
    pixels = to_uint8(images).permute(0, 2, 3, 1)  # B, H, W, C
    return {
        "resolution": res, "channels": channels,
        "images": [{"title": t, "pixels": b64(pixels[i].numpy())} for i, t in enumerate(titles)],
        "layers": [encode_layer(k, v, budget, len(maps)) for k, v in maps.items()],
        "lut": b64(A.heat_colors()), "maxAlpha": A.HEAT_MAX_ALPHA, "gamma": A.HEAT_GAMMA,
        "start": [list(p) for p in start_points],
    }


# --------------------------------------------------------------------------- the report

@dataclass
class Report:
    """Everything the template shows."""
    title: str
    source: str  # the run directory, checkpoint, exported folder or shipped name (header line)
    generated: str
    overview: list[tuple[str, str]]
    config: dict[str, Any]
    config_yaml: str
    config_source: str  # where config_yaml comes from
    provenance: list[tuple[str, str]]  # which weights, code version, command line / export record
    samples_title: str
    class_grid: list[tuple[str, str]]  # (class name, data URI of one row of samples)
    latest: tuple[int, str] | None  # (step, data URI) of the newest samples/step_*.png
    evolution: list[dict[str, Any]]  # {"step", "uri"}
    evolution_note: str | None
    charts: list[Chart]
    charts_note: str | None
    json_tables: list[JsonTable]
    metrics_note: str | None
    figures: list[tuple[str, str]]  # (caption, data URI)
    figure_notes: list[str]
    explorer: dict[str, Any] | None
    explorer_note: str
    record_note: str | None = None  # why there are no curves etc. (an export, a shipped model)
    neighbours: list[NeighbourRow] = field(default_factory=list)  # generated images and their nearest training images
    neighbours_note: str | None = None  # what was searched, or why the view is missing


def _figure_uri(draw: Callable[[Path], Path | None]) -> str | None:
    """``draw(path)`` writes a PNG (or returns None); its data URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = draw(Path(tmp) / "fig.png")
        return data_uri(path.read_bytes()) if path is not None else None


def class_name(names: list[str], c: int) -> str:
    return names[c] if c < len(names) else f"class {c}"


def no_record_note(run: LoadedRun) -> str | None:
    """Why ``run`` has no training record (curves, sample evolution, evaluations); None when it has one."""
    if run.run_dir is not None:
        return None
    if run.kind == "pretrained":
        return (f"{run.checkpoint.name} is a model shipped with sagan-torch: a generator without its training "
                "record, so there are no training curves, sample evolution or evaluation results here.")
    if run.kind == "export":
        return ("This is a folder written by 'sagan export': the generator without its training record. "
                "Training curves, the sample evolution and evaluation results are in the run directory it was "
                "exported from (sagan report RUN_DIR).")
    return (f"{run.checkpoint} is not inside a run directory, so there is no training record (metrics.csv, "
            "samples/, eval/) to show.")


def report_title(run: LoadedRun) -> str:
    if run.run_dir is not None:
        return f"SAGAN run {run.run_dir.name}"
    if run.kind == "pretrained":
        return f"SAGAN model {run.checkpoint.name} (shipped with sagan-torch)"
    if run.kind == "export":
        return f"SAGAN model {run.checkpoint.name} (exported)"
    return f"SAGAN checkpoint {run.checkpoint.name}"


# --------------------------------------------------------------------------- the report's sections

def tracked_fid_text(tracked: dict | None) -> str | None:
    """"12.345 at step 1000 (Fashion-MNIST classifier features)" from a best.pt / export record."""
    if not tracked or not isinstance(tracked.get("fid"), (int, float)):
        return None
    features = tracked.get("features")
    return (f"{tracked['fid']:.3f}" + (f" at step {tracked['step']}" if "step" in tracked else "")
            + (f" ({features_title(features)})" if isinstance(features, str) and features else ""))


def overview_section(run: LoadedRun) -> list[tuple[str, str]]:
    """(label, value) rows: source, weights, step, data, resolution, attention placement, parameters, classes."""
    cfg = run.cfg
    if run.run_dir is not None:
        rows = [("run", run.run_dir.name), ("directory", str(run.run_dir.resolve()))]
    elif run.kind == "pretrained":
        rows = [("model", f"{run.checkpoint.name} (shipped with sagan-torch)")]
    elif run.kind == "export":
        rows = [("model", f"{run.checkpoint.name} (exported generator)"), ("folder", str(run.checkpoint.resolve()))]
    else:
        rows = [("checkpoint file", str(run.checkpoint.resolve()))]
    rows += [("weights", run.describe()), ("step", str(run.step))]
    if run.kind == "checkpoint":
        rows.append(("checkpoint", f"{run.checkpoint.name} ({run.which})"))
    fid = tracked_fid_text(run.tracked_fid)
    if fid:
        rows.append(("tracked FID", fid))
    dataset = run.dataset or cfg.data.dataset
    n_g = count_parameters(run.G)
    rows += [
        ("data", f"{dataset} ({run.num_classes} classes)" if run.num_classes else f"{dataset}"),
        ("resolution", f"{cfg.model.resolution}x{cfg.model.resolution}, {plural(run.channels, 'channel')}"),
        ("attention", f"G at {cfg.model.g_attn or 'none'}"
                      + (f", D at {cfg.model.d_attn or 'none'}" if run.D is not None else "")
                      + f" ({cfg.model.attn_variant} variant)"),
        ("parameters", f"G {n_g / 1e6:.2f}M, D {count_parameters(run.D) / 1e6:.2f}M" if run.D is not None
                       else f"G {n_g / 1e6:.2f}M (generator only: no discriminator)"),
    ]
    if run.class_names:
        rows.append(("classes", ", ".join(f"{i}: {n}" for i, n in enumerate(run.class_names))))
    return rows


def config_section(run: LoadedRun) -> tuple[dict[str, Any], str, str]:
    """The config as a tree and as YAML text, and where it comes from: RUN_DIR/config.yaml when
    there is one, else the checkpoint's or the export's record of the training config."""
    cfg_file = RunDir(run.run_dir).config if run.run_dir is not None else None
    if cfg_file is not None and cfg_file.is_file():
        config_yaml, where = cfg_file.read_text(encoding="utf-8"), "config.yaml as written in the run directory"
    else:
        config_yaml = run.cfg.to_yaml()
        where = ("the training config stored with the exported model" if run.kind != "checkpoint"
                 else "the config stored in the checkpoint")
    try:
        config = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        config = run.cfg.to_dict()
    return config, config_yaml, where


def provenance_section(run: LoadedRun) -> list[tuple[str, str]]:
    """(key, value) rows: which weights (``run.provenance()``), then RUN_DIR/version.json (code
    version, command line) or an export's record (minus the config, shown on its own)."""
    rows = flatten(run.provenance(), "weights")
    if run.run_dir is not None:
        vfile = RunDir(run.run_dir).version
        if vfile.is_file():
            try:
                rows += flatten(json.loads(vfile.read_text(encoding="utf-8")))
            except ValueError:
                rows.append(("version.json", "could not be read"))
    elif run.kind != "checkpoint":
        rows += flatten({k: v for k, v in export_info(run.G).items() if k != "config"}, "export")
    return rows


def sample_grids_section(run: LoadedRun, seed: int, device: str | torch.device, cols: int = 8
                         ) -> list[tuple[str, str]]:
    """Freshly generated samples: (class name, data URI of one row of ``cols`` images) per class,
    or one ``cols`` x ``cols`` grid for an unconditional model."""
    grids: list[tuple[str, str]] = []
    with torch.no_grad():
        if run.num_classes:
            for c in range(run.num_classes):
                imgs, _ = generate(run.G, cols, [c], seed, batch_size=256, device=device)
                grids.append((class_name(run.class_names, c), data_uri(grid_png(imgs, cols))))
        else:
            imgs, _ = generate(run.G, cols * cols, None, seed, batch_size=256, device=device)
            grids.append(("samples", data_uri(grid_png(imgs, cols))))
    return grids


def evolution_section(run_dir: Path, max_frames: int) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """The training sample grids (samples/step_*.png) as slider frames {"step", "uri"}, at most
    ``max_frames`` spread evenly over training, and the newest one as (step, URI)."""
    frames = []
    for p in RunDir(run_dir).samples.glob("step_*.png"):
        m = SAMPLE_STEP_RE.match(p.name)
        if m:
            frames.append((int(m.group(1)), p))
    frames.sort()
    if len(frames) > max_frames:
        keep = sorted({int(round(i)) for i in np.linspace(0, len(frames) - 1, max_frames)})
        frames = [frames[i] for i in keep]
    evolution = [{"step": s, "uri": data_uri(p.read_bytes())} for s, p in frames]
    latest = (evolution[-1]["step"], evolution[-1]["uri"]) if evolution else None
    return evolution, latest


def charts_section(run_dir: Path, plain: str = STANDARD_FEATURES) -> tuple[list[Chart], str | None]:
    """The training curves from RUN_DIR/metrics.csv, and a note when there are none."""
    metrics_csv = RunDir(run_dir).metrics
    if not metrics_csv.is_file():
        return [], "No metrics.csv in the run directory."
    charts = training_charts(read_metrics_csv(metrics_csv), plain)
    return charts, None if charts else "metrics.csv has no rows yet."


def metrics_tables_section(run_dir: Path) -> list[JsonTable]:
    """One table per evaluation / metrics JSON file of the run."""
    return [json_table(p, run_dir) for p in metrics_json_files(run_dir)]


def attention_figures_section(run: LoadedRun, seed: int, device: str | torch.device, data_root: str | None,
                              real_attention: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """(caption, data URI) of G's attention figure on generated images and, when ``real_attention``
    and the run's data can be loaded, D's on real images; notes on what was not drawn and why."""
    figures: list[tuple[str, str]] = []
    notes: list[str] = []
    if A.has_attention(run.G):
        uri = _figure_uri(lambda p: A.run_attention_figure(run, "G", p, seed=seed, device=device))
        if uri:
            figures.append(("Generator attention on generated images (auto query points)", uri))
    else:
        notes.append(f"G has no attention layers (model.g_attn={run.cfg.model.g_attn}).")
    if run.D is None:
        notes.append("Discriminator attention: not drawn: this model holds only the generator.")
    elif A.has_attention(run.D) and real_attention:
        try:
            real, labels = A.real_images(run, 4, None, seed, data_root)
        except UsageError as e:
            notes.append(f"Discriminator attention on real images: not drawn: {e}")
        else:
            uri = _figure_uri(lambda p: A.discriminator_attention_figure(run.D, real, labels, p,
                                                                         class_names=run.class_names, seed=seed))
            if uri:
                figures.append(("Discriminator attention on real training images (auto query points)", uri))
    return figures, notes


def explorer_section(run: LoadedRun, seed: int, device: str | torch.device, n_images: int | None = None,
                     budget: int = EXPLORER_BUDGET_BYTES) -> tuple[dict[str, Any] | None, str]:
    """The interactive explorer's data (``explorer_data``: generated images with G's, and D's on
    them, attention maps) and a note; (None, note) for a model without attention layers."""
    if not (A.has_attention(run.G) or A.has_attention(run.D)):
        return None, "This model has no attention layers."
    n = n_images or (min(run.num_classes, 10) if run.num_classes else 6)
    images, y, maps = A.generator_samples(run.G, n, None, seed, device)
    if A.has_attention(run.D):
        _, d_maps = A.discriminator_attention(run.D, images, y)
        maps.update(d_maps)
    titles = ([class_name(run.class_names, int(c)) for c in y] if y is not None
              else [f"sample {i + 1}" for i in range(n)])
    start = [A.auto_points(images[i], 1, seed)[0] for i in range(n)]
    explorer = explorer_data(images, titles, maps, start, budget)
    strided = [f"{lay['label']} every {lay['stride']} feature cells" for lay in explorer["layers"]
               if lay["stride"] > 1]
    notes = ["Query maps are stored for " + "; ".join(strided) + " to keep the file small."] if strided else []
    if run.D is None:
        notes.append("Only the generator's layers: this model holds no discriminator.")
    return explorer, " ".join(notes)


# --------------------------------------------------------------------------- the report

def build_report(source: LoadedRun | str | Path, out_dir: str | Path | None = None, seed: int = 0,
                 explorer_images: int | None = None, max_evolution: int = 24, device: str | torch.device = "cpu",
                 data_root: str | None = None, real_attention: bool = True,
                 explorer_budget: int = EXPLORER_BUDGET_BYTES, progress: bool = False) -> Path:
    """Write the self-contained HTML report of ``source`` (a ``LoadedRun``, or anything
    ``load_run`` takes) as ``out_dir/report.html``; returns its path. Default ``out_dir``: the
    run directory, else ``run.output_base`` (an export's folder, ``./pretrained-NAME``).

    ``explorer_images``: generated images in the attention explorer (default one per class, at
    most 10; 6 for unconditional models). ``real_attention``: also draw what needs the real training
    images, D's attention on them and the nearest-neighbour view (:mod:`sagan.viz.neighbours`), when
    the run's data can be loaded (``data_root`` overrides where it is).
    """
    from tqdm import tqdm
    run = source if isinstance(source, LoadedRun) else load_run(source, device=device)
    out = RunDir(Path(out_dir) if out_dir is not None else run.output_base).report  # report.html in any folder
    record = run.run_dir  # None: no training record (an export, a shipped model, a loose checkpoint)
    note = no_record_note(run)
    stages = ["model", "samples", "nearest neighbours", "training record", "attention figures", "attention explorer",
              "page"]
    bar = tqdm(total=len(stages), desc="report", unit="part", disable=not progress, leave=False)

    started: list[str] = []

    def stage(what: str) -> None:  # the previous part is done; ``what`` starts
        if started:
            bar.update(1)
        started.append(what)
        bar.set_postfix_str(what)
    stage("model")
    overview = overview_section(run)
    config, config_yaml, config_source = config_section(run)
    provenance = provenance_section(run)
    stage("samples")
    class_grid = sample_grids_section(run, seed, device)
    samples_title = (f"{'One row per class (same noise in each column)' if run.num_classes else 'Samples'}, "
                     f"{'EMA' if run.ema else 'raw'} generator at step {run.step}")
    stage("nearest neighbours")
    neighbours, neighbours_note = (neighbours_section(run, seed, device, data_root) if real_attention
                                   else ([], "Not drawn (--no-real): it needs the training images."))
    stage("training record")
    if record is not None:
        evolution, latest = evolution_section(record, max_evolution)
        evolution_note = None if evolution else "No samples/step_*.png in the run directory."
        charts, charts_note = charts_section(record, plain_metric_features(run))
        json_tables = metrics_tables_section(record)
    else:
        evolution, latest, evolution_note, charts, charts_note, json_tables = [], None, note, [], note, []
    metrics_note = note if record is None else (
        None if json_tables else "No evaluation results yet (no evaluation*.json, metrics*.json or eval/*.json in "
                                 "the run directory); run 'sagan evaluate RUN_DIR' to compute FID and friends.")
    stage("attention figures")
    figures, figure_notes = attention_figures_section(run, seed, device, data_root, real_attention)
    stage("attention explorer")
    explorer, explorer_note = explorer_section(run, seed, device, explorer_images, explorer_budget)
    stage("page")
    report = Report(
        title=report_title(run), source=str(record.resolve() if record is not None else run.checkpoint),
        generated=time.strftime("%Y-%m-%d %H:%M"), overview=overview, config=config, config_yaml=config_yaml,
        config_source=config_source, provenance=provenance, samples_title=samples_title, class_grid=class_grid,
        latest=latest, evolution=evolution, evolution_note=evolution_note, charts=charts, charts_note=charts_note,
        json_tables=json_tables, metrics_note=metrics_note, figures=figures, figure_notes=figure_notes,
        explorer=explorer, explorer_note=explorer_note, record_note=note, neighbours=neighbours,
        neighbours_note=neighbours_note)
    path = atomic_write_text(out, render(report))
    bar.update(1)
    bar.close()
    return path


def template_environment() -> Environment:
    """The Jinja2 environment of the package's HTML pages (autoescaped; shared style ``_style.css.j2``)."""
    env = Environment(loader=PackageLoader("sagan.viz", "templates"),
                      autoescape=select_autoescape(("html", "j2"), default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["script_json"] = lambda obj: Markup(script_json(obj))
    env.filters["is_mapping"] = lambda v: isinstance(v, dict)
    env.filters["fmt"] = _fmt
    return env


def render(report: Report) -> str:
    """The report's HTML (Jinja2, autoescaped)."""
    return template_environment().get_template("report.html.j2").render(r=report)

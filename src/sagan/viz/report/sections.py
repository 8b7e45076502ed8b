"""The report's sections: each ``*_section`` function gathers what one part of the page shows
(overview, config, provenance, sample grids, the training samples' evolution, training charts,
metrics tables, attention figures, the attention explorer), and the notes shown where a part is
missing.

A run directory (or a checkpoint in one) has a training record - metrics.csv, the training sample
grids, evaluation JSON - and the sections show it; an exported folder, a shipped model or a loose
checkpoint has none (:func:`no_record_note` says why). The metrics tables label every metric that
depends on the feature extractor with it (:func:`sagan.metrics.naming.key_label`).
"""
from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from sagan.data.grid import grid_png
from sagan.errors import UsageError, plural
from sagan.metrics.naming import STANDARD_FEATURES, features_title, key_label
from sagan.models import count_parameters
from sagan.models.export import export_info
from sagan.runs.folder import RunDir
from sagan.sampling import LoadedRun, generate
from sagan.viz import attention as A
from sagan.viz.report.charts import Chart, read_metrics_csv, training_charts
from sagan.viz.report.explorer import EXPLORER_BUDGET_BYTES, explorer_data
from sagan.viz.report.html import data_uri, format_value

SAMPLE_STEP_RE = re.compile(r"^step_(\d+)\.png$")
METRICS_JSON_PATTERNS = ("evaluation*.json", "eval*.json", "metrics*.json", "eval/*.json", "eval/**/*.json",
                         "evaluation/*.json")


# --------------------------------------------------------------------------- metrics JSON

@dataclass
class JsonTable:
    path: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    error: str | None = None



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
    return [(prefix or "value", format_value(obj))]


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
        heads = [f"{key_label(c, plain)} [{c}]" if key_label(c, plain) else c for c in cols]
        return JsonTable(rel, heads, [[r.get(c, "") for c in cols] for r in flat])
    plain = json_features(obj)
    rows = [(k, key_label(k, plain), v) for k, v in flatten(obj)]
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


# --------------------------------------------------------------------------- notes and titles

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

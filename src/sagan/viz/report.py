"""A self-contained HTML report of a run: ``build_report(run_dir)`` writes ``report.html``.

Each part of the page comes from one ``*_section`` function (overview, config, version, sample
grids, evolution, charts, metrics tables, attention figures, explorer); ``build_report`` gathers
them into a ``Report`` and ``render`` fills the template.

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
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from sagan.data.datasets import to_uint8
from sagan.data.grid import grid_png
from sagan.errors import UsageError
from sagan.fileio import atomic_write_text
from sagan.models import count_parameters
from sagan.train.rundir import RunDir
from sagan.train.runs import LoadedRun, generate, load_run
from sagan.viz import attention as A

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
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- metrics.csv and curves

def read_metrics_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of ``metrics.csv`` as float arrays (NaN where a row has no value)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        keys = list(reader.fieldnames or [])
        rows = list(reader)

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


def curve_groups(columns: list[str]) -> list[tuple[str, list[str], str]]:
    """(title, columns, y-label) of each chart, from the column names of metrics.csv."""
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
    take("FID (lower is better)", [c for c in cols if "fid" in c.lower()], "FID")
    for c in cols:
        if c not in used:
            take(c, [c], c)
    return groups


def training_charts(columns: dict[str, np.ndarray]) -> list[Chart]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    step = columns.get("step")
    if step is None or len(step) == 0:
        return []
    charts = []
    for title, names, ylabel in curve_groups(list(columns)):
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


def json_table(path: Path, root: Path) -> JsonTable:
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return JsonTable(rel, error=f"could not read: {e}")
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        flat = [dict(flatten(r)) for r in obj]
        cols: list[str] = []
        for r in flat:
            cols += [k for k in r if k not in cols]
        return JsonTable(rel, cols, [[r.get(c, "") for c in cols] for r in flat])
    return JsonTable(rel, ["key", "value"], [[k, v] for k, v in flatten(obj)])


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
    run_dir: str
    generated: str
    overview: list[tuple[str, str]]
    config: dict[str, Any]
    config_yaml: str
    version: list[tuple[str, str]]
    class_grid: list[tuple[str, str]]  # (class name, data URI of one row of samples)
    latest: tuple[int, str] | None  # (step, data URI) of the newest samples/step_*.png
    evolution: list[dict[str, Any]]  # {"step", "uri"}
    charts: list[Chart]
    charts_note: str | None
    json_tables: list[JsonTable]
    figures: list[tuple[str, str]]  # (caption, data URI)
    figure_notes: list[str]
    explorer: dict[str, Any] | None
    explorer_note: str


def _figure_uri(draw: Callable[[Path], Path | None]) -> str | None:
    """``draw(path)`` writes a PNG (or returns None); its data URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = draw(Path(tmp) / "fig.png")
        return data_uri(path.read_bytes()) if path is not None else None


def class_name(names: list[str], c: int) -> str:
    return names[c] if c < len(names) else f"class {c}"


# --------------------------------------------------------------------------- the report's sections

def overview_section(run: LoadedRun, run_dir: Path) -> list[tuple[str, str]]:
    """(label, value) rows: run, checkpoint, data, resolution, attention placement, parameters, classes."""
    cfg = run.cfg
    n_g, n_d = count_parameters(run.G), count_parameters(run.D)
    rows = [
        ("run", run_dir.name), ("directory", str(run_dir.resolve())), ("step", str(run.step)),
        ("checkpoint", str(run.checkpoint.name)),
        ("data", f"{cfg.data.dataset} ({run.num_classes} classes)" if run.num_classes else f"{cfg.data.dataset}"),
        ("resolution", f"{cfg.model.resolution}x{cfg.model.resolution}, {run.channels} channel(s)"),
        ("attention", f"G at {cfg.model.g_attn or 'none'}, D at {cfg.model.d_attn or 'none'} "
                      f"({cfg.model.attn_variant} variant)"),
        ("parameters", f"G {n_g / 1e6:.2f}M, D {n_d / 1e6:.2f}M"),
    ]
    if run.class_names:
        rows.append(("classes", ", ".join(f"{i}: {n}" for i, n in enumerate(run.class_names))))
    return rows


def config_section(run: LoadedRun, run_dir: Path) -> tuple[dict[str, Any], str]:
    """The config as a tree and as YAML text: RUN_DIR/config.yaml when present, else the checkpoint's."""
    cfg_file = RunDir(run_dir).config
    config_yaml = cfg_file.read_text(encoding="utf-8") if cfg_file.is_file() else run.cfg.to_yaml()
    try:
        config = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        config = run.cfg.to_dict()
    return config, config_yaml


def version_section(run_dir: Path) -> list[tuple[str, str]]:
    """RUN_DIR/version.json flattened to (key, value) rows; empty when missing or unreadable."""
    vfile = RunDir(run_dir).version
    if not vfile.is_file():
        return []
    try:
        return flatten(json.loads(vfile.read_text(encoding="utf-8")))
    except ValueError:
        return []


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


def charts_section(run_dir: Path) -> tuple[list[Chart], str | None]:
    """The training curves from RUN_DIR/metrics.csv, and a note when there are none."""
    metrics_csv = RunDir(run_dir).metrics
    if not metrics_csv.is_file():
        return [], "No metrics.csv in the run directory."
    charts = training_charts(read_metrics_csv(metrics_csv))
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
    if A.has_attention(run.D) and real_attention:
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
    note = "Query maps are stored for " + "; ".join(strided) + " to keep the file small." if strided else ""
    return explorer, note


# --------------------------------------------------------------------------- the report

def build_report(run_dir: str | Path, out: str | Path | None = None, seed: int = 0,
                 explorer_images: int | None = None, max_evolution: int = 24, device: str | torch.device = "cpu",
                 data_root: str | None = None, real_attention: bool = True,
                 explorer_budget: int = EXPLORER_BUDGET_BYTES) -> Path:
    """Write the run's self-contained HTML report; returns its path (default RUN_DIR/report.html).

    ``explorer_images``: generated images in the attention explorer (default one per class, at
    most 10; 6 for unconditional models). ``real_attention``: also draw D's attention on real
    images when the run's data can be loaded (``data_root`` overrides where it is).
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, device=device)
    if run.run_dir is not None:
        run_dir = run.run_dir
    out = Path(out) if out else RunDir(run_dir).report
    overview = overview_section(run, run_dir)
    config, config_yaml = config_section(run, run_dir)
    version = version_section(run_dir)
    class_grid = sample_grids_section(run, seed, device)
    evolution, latest = evolution_section(run_dir, max_evolution)
    charts, charts_note = charts_section(run_dir)
    json_tables = metrics_tables_section(run_dir)
    figures, figure_notes = attention_figures_section(run, seed, device, data_root, real_attention)
    explorer, explorer_note = explorer_section(run, seed, device, explorer_images, explorer_budget)
    report = Report(
        title=f"SAGAN run {run_dir.name}", run_dir=str(run_dir.resolve()),
        generated=time.strftime("%Y-%m-%d %H:%M"), overview=overview, config=config, config_yaml=config_yaml,
        version=version, class_grid=class_grid, latest=latest, evolution=evolution, charts=charts,
        charts_note=charts_note, json_tables=json_tables, figures=figures, figure_notes=figure_notes,
        explorer=explorer, explorer_note=explorer_note)
    return atomic_write_text(out, render(report))


def render(report: Report) -> str:
    """The report's HTML (Jinja2, autoescaped)."""
    env = Environment(loader=PackageLoader("sagan.viz", "templates"),
                      autoescape=select_autoescape(("html", "j2"), default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["script_json"] = lambda obj: Markup(script_json(obj))
    env.filters["is_mapping"] = lambda v: isinstance(v, dict)
    env.filters["fmt"] = _fmt
    return env.get_template("report.html.j2").render(r=report)

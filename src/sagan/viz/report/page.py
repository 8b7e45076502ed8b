"""The report as one page: :class:`Report` holds everything the template shows, and
:func:`build_report` gathers it from the sections (:mod:`sagan.viz.report.sections`) of a run,
checkpoint, exported folder or shipped model and writes ``report.html`` (rendered by
:func:`render`), reporting its progress part by part.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sagan.fileio import atomic_write_text
from sagan.runs.folder import RunDir
from sagan.sampling import LoadedRun, load_run
from sagan.viz.neighbours import NeighbourRow, neighbours_section
from sagan.viz.report.charts import Chart, plain_metric_features
from sagan.viz.report.explorer import EXPLORER_BUDGET_BYTES
from sagan.viz.report.html import template_environment
from sagan.viz.report.sections import (
    JsonTable,
    attention_figures_section,
    charts_section,
    config_section,
    evolution_section,
    explorer_section,
    metrics_tables_section,
    no_record_note,
    overview_section,
    provenance_section,
    report_title,
    sample_grids_section,
)


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


def render(report: Report) -> str:
    """The report's HTML (Jinja2, autoescaped)."""
    return template_environment().get_template("report.html.j2").render(r=report)


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

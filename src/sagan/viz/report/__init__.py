"""A self-contained HTML report of a model: ``build_report(source)`` writes ``report.html``.

The source is anything ``sagan.sampling.load_run`` loads. A run directory (or a checkpoint in
one) has a training record - metrics.csv, the training sample grids, evaluation JSON - and the
report shows it; an exported folder or a shipped model has none, and the report shows the model
(config, provenance, samples, G's attention) with a note where the training record would be.

Everything the page shows is inside the one file: images as ``data:`` URIs, plots rendered with
matplotlib to PNG, attention maps for the interactive explorer precomputed and embedded as
base64 uint8 arrays, plain JavaScript and CSS inline; no network access is needed to view it.

The package's modules, bottom to top: :mod:`~sagan.viz.report.html` (escaping, ``data:`` URIs,
JSON for inline scripts, the Jinja2 templates), :mod:`~sagan.viz.report.charts` (metrics.csv and
the training charts), :mod:`~sagan.viz.report.explorer` (the attention explorer's encoded maps),
:mod:`~sagan.viz.report.sections` (one ``*_section`` function per part of the page, the metrics
tables), :mod:`~sagan.viz.report.page` (``Report``, ``build_report``). Metric names and titles
come from :mod:`sagan.metrics.naming`. The names below are the package's interface.
"""
from __future__ import annotations

from sagan.metrics.naming import metric_features
from sagan.viz.report.charts import (
    Chart,
    curve_groups,
    plain_metric_features,
    read_metrics_csv,
    training_charts,
)
from sagan.viz.report.explorer import (
    EXPLORER_BUDGET_BYTES,
    b64,
    decode_layer,
    encode_layer,
    explorer_data,
    explorer_stride,
)
from sagan.viz.report.html import (
    data_uri,
    format_value,
    html_escape,
    script_json,
    template_environment,
)
from sagan.viz.report.page import Report, build_report, render
from sagan.viz.report.sections import (
    METRICS_JSON_PATTERNS,
    SAMPLE_STEP_RE,
    JsonTable,
    attention_figures_section,
    charts_section,
    class_name,
    config_section,
    evolution_section,
    explorer_section,
    flatten,
    json_features,
    json_table,
    metrics_json_files,
    metrics_tables_section,
    no_record_note,
    overview_section,
    provenance_section,
    report_title,
    sample_grids_section,
    tracked_fid_text,
)

__all__ = [
    "EXPLORER_BUDGET_BYTES", "METRICS_JSON_PATTERNS", "SAMPLE_STEP_RE", "Chart", "JsonTable", "Report",
    "attention_figures_section", "b64", "build_report", "charts_section", "class_name", "config_section",
    "curve_groups", "data_uri", "decode_layer", "encode_layer", "evolution_section", "explorer_data",
    "explorer_section", "explorer_stride", "flatten", "format_value", "html_escape", "json_features", "json_table",
    "metric_features", "metrics_json_files", "metrics_tables_section", "no_record_note", "overview_section",
    "plain_metric_features", "provenance_section", "read_metrics_csv", "render", "report_title",
    "sample_grids_section", "script_json", "template_environment", "tracked_fid_text", "training_charts",
]

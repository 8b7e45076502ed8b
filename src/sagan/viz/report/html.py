"""The report's HTML rendering: escaping, ``data:`` URIs, JSON for inline scripts, and the Jinja2
templates (``sagan/viz/templates``, shared with the study page).

The pages are rendered with autoescaping on, so run names, class names, paths and config strings
are HTML-escaped; data for the scripts goes into ``<script type="application/json">`` blocks
through :func:`script_json`, which escapes ``<``, ``>`` and ``&`` so that no string can end the
script element. :func:`template_environment` loads the templates (the report's page renders
``report.html.j2`` with it: :func:`sagan.viz.report.page.render`).
"""
from __future__ import annotations

import base64
import json
import re
from typing import Any

from sagan.extras import requires

with requires("figures", "the HTML report"):
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup, escape

_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def html_escape(text: str) -> str:
    """What the template's autoescaping makes of ``text``."""
    return str(escape(text))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def script_json(obj: Any) -> str:
    """JSON safe to place inside a ``<script>`` element (no ``</script>``, ``<!--`` or ``&``)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group(0)], text)


def format_value(v: Any) -> str:
    """A value as a table cell shows it: floats to 6 significant digits, None as ``-``, a flat
    list comma-separated, anything nested as JSON."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list)) for x in v):
        return ", ".join(format_value(x) for x in v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def template_environment() -> Environment:
    """The Jinja2 environment of the package's HTML pages (autoescaped; shared style ``_style.css.j2``)."""
    env = Environment(loader=PackageLoader("sagan.viz", "templates"),
                      autoescape=select_autoescape(("html", "j2"), default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["script_json"] = lambda obj: Markup(script_json(obj))
    env.filters["is_mapping"] = lambda v: isinstance(v, dict)
    env.filters["fmt"] = format_value
    return env

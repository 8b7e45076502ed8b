"""The run folder of a torchrun job across elastic restarts: named after the rendezvous id, marked
with it, and found again by a restarted worker group."""
from __future__ import annotations

import glob
import json
import re
from pathlib import Path

from sagan.distributed import (
    elastic_restart_count,
    elastic_run_id,
    launched_by_torchrun,
)

ELASTIC_MARK = "elastic.json"


def elastic_run_name(preset: str) -> str | None:
    """Default run name under torchrun: ``PRESET-<rendezvous id>``, the same for every restart."""
    rid = elastic_run_id()
    if rid is None:
        return None
    return f"{preset}-{re.sub(r'[^A-Za-z0-9._-]', '-', rid)[:48]}"


def mark_elastic_run(run_dir: Path) -> None:
    """Record torchrun's rendezvous id in a new run directory (rank 0), so a restart finds it."""
    rid = elastic_run_id()
    if launched_by_torchrun() and rid is not None:
        (Path(run_dir) / ELASTIC_MARK).write_text(json.dumps({"run_id": rid}) + "\n", encoding="utf-8")


def find_elastic_run(out_root: str | Path, name: str) -> Path | None:
    """The run directory a restarted torchrun worker group must continue, or None.

    Only on an elastic restart (TORCHELASTIC_RESTART_COUNT > 0): the directory ``out/NAME`` or
    ``out/NAME-k`` (the name taken when NAME existed) whose elastic.json holds this job's
    rendezvous id. Another job's directory of the same name is never picked.
    """
    rid = elastic_run_id()
    if elastic_restart_count() <= 0 or rid is None:
        return None
    root = Path(out_root)
    for cand in [root / name, *sorted(root.glob(f"{glob.escape(name)}-*"))]:
        try:
            if json.loads((cand / ELASTIC_MARK).read_text(encoding="utf-8")).get("run_id") == rid:
                return cand
        except (OSError, ValueError, AttributeError):
            continue
    return None

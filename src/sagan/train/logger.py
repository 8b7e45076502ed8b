"""Scalar logging to a CSV file and TensorBoard, rank 0 only."""
from __future__ import annotations

import csv
from pathlib import Path

from sagan.extras import requires
from sagan.fileio import atomic_path
from sagan.runs.folder import RunDir


class ScalarLogger:
    """Appends rows of scalars to ``metrics.csv`` and TensorBoard events in ``tb/``.

    The CSV header is the union of keys seen; when new keys appear the file is rewritten with
    the wider header (rows are small; this happens a handful of times per run at most).
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.path = RunDir(run_dir).metrics
        self.rows: list[dict[str, float]] = []
        self.keys: list[str] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.keys = list(reader.fieldnames or [])
                self.rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in reader]
        self.tb = None
        if tensorboard:
            with requires("train", "TensorBoard logging"):
                from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(RunDir(run_dir).tensorboard))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (used on resume from an older checkpoint)."""
        keep = [r for r in self.rows if r.get("step", 0) <= step]
        if len(keep) != len(self.rows):
            self.rows = keep
            self._rewrite()

    def rewind(self, step: int) -> None:
        """Forget everything logged after ``step`` (resume and rollback replay those steps):
        CSV rows are dropped, and the TensorBoard writer is reopened with ``purge_step`` so its
        events after ``step`` are discarded."""
        self.truncate_after(step)
        if self.tb is not None:
            with requires("train", "TensorBoard logging"):
                from torch.utils.tensorboard import SummaryWriter
            self.tb.close()
            self.tb = SummaryWriter(str(RunDir(self.run_dir).tensorboard), purge_step=step + 1)

    def _rewrite(self) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.keys)
            w.writeheader()
            for r in self.rows:
                w.writerow(r)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        row = {"step": float(step), **{k: float(v) for k, v in scalars.items()}}
        self.rows.append(row)
        new = [k for k in row if k not in self.keys]
        if new or not self.path.is_file():
            self.keys += new
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(row)
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

"""Metric rows of a run: ``RUN/metrics.csv``, mirrored to TensorBoard when it is installed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from seqlvm.io import atomic_path


def _summary_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: no package, no TensorBoard log
        return None
    return SummaryWriter(log_dir=str(log_dir))


class MetricsLog:
    """Append-only CSV of metric rows keyed by ``step``, one column per metric name.

    Columns are added as new metrics appear (the file is then rewritten atomically with the wider
    header). Opening with ``resume_step`` drops rows after that step, so that a resumed run's file
    matches an uninterrupted run's.

    path:            the CSV file.
    resume_step:     None starts a new file; an int keeps the existing rows up to that step.
    tensorboard_dir: where to write TensorBoard events, or None for none.
    """

    def __init__(self, path: Path, resume_step: int | None = None, tensorboard_dir: Path | None = None) -> None:
        self.path = path
        self.columns: list[str] = ["step"]
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = list(reader.fieldnames or ["step"])
                rows = [row for row in reader if row.get("step") and int(row["step"]) <= resume_step]
        self._rewrite(rows)
        self._handle = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns)
        self._tensorboard = _summary_writer(tensorboard_dir) if tensorboard_dir else None

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(rows)

    def write(self, step: int, values: dict[str, float]) -> None:
        """Append one row for ``step``."""
        new = [name for name in values if name not in self.columns]
        if new:
            self._handle.close()
            with open(self.path, newline="") as handle:
                rows = list(csv.DictReader(handle))
            self.columns += new
            self._rewrite(rows)
            self._handle = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._handle, fieldnames=self.columns)
        self._writer.writerow({"step": step, **{k: f"{v:.8g}" for k, v in values.items()}})
        self._handle.flush()
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        self._handle.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as dicts of floats (empty cells left out)."""
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]

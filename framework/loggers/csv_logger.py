"""``metrics.csv`` in the run folder: a ``step`` column, a column per metric, a row per call."""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from framework.loggers.base import Logger, check_status, check_step, scalar_metrics
from framework.loggers.versioning import resolve_run_dir

logger = logging.getLogger(__name__)

__all__ = ["CSVLogger"]

METRICS_FILE = "metrics.csv"
STEP_COLUMN = "step"


class CSVLogger(Logger):
    """Writes metrics to ``<save_dir>/<name>/version_<N>/metrics.csv``.

    The folder follows the same rule as ``TensorBoardLogger``; pass the TensorBoard logger's
    ``version`` to share its folder. Columns are ``step`` and the union of the metric names seen
    so far, in the order they first appeared; a call that brings a new name rewrites the file
    with the wider header, any other call appends one row. On resume, ``purge_step`` drops the
    rows at that step or later that the interrupted run wrote.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str,
        version: int | None = None,
        purge_step: int | None = None,
    ) -> None:
        if purge_step is not None:
            purge_step = check_step(purge_step)
        self._version, self._log_dir = resolve_run_dir(save_dir, name, version)
        self._path = self._log_dir / METRICS_FILE
        self._columns: list[str] = [STEP_COLUMN]

        if self._path.exists():
            _drop_partial_line(self._path)
            columns, rows = _read(self._path)
            self._columns = columns
            if purge_step is not None:
                kept = [row for row in rows if _row_step(row) < purge_step]
                if len(kept) != len(rows):
                    _write_atomic(self._path, columns, kept)
                logger.info(
                    "%s resumes at step %d; dropped %d rows at that step or later",
                    self._path,
                    purge_step,
                    len(rows) - len(kept),
                )

    @property
    def log_dir(self) -> Path:
        return self._log_dir

    @property
    def version(self) -> int:
        return self._version

    @property
    def path(self) -> Path:
        """The ``metrics.csv`` file."""
        return self._path

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        step = check_step(step)
        values = scalar_metrics(metrics)
        if not values:
            return
        if STEP_COLUMN in values:
            raise ValueError(
                f"{STEP_COLUMN!r} is the CSV logger's own column and cannot be a metric name. "
                f"Received: metrics={sorted(values)}"
            )
        row = {STEP_COLUMN: str(step), **{key: repr(value) for key, value in values.items()}}

        new_columns = [key for key in values if key not in self._columns]
        if new_columns or not self._path.exists():
            rows = _read(self._path)[1] if self._path.exists() else []
            self._columns = self._columns + new_columns
            _write_atomic(self._path, self._columns, [*rows, row])
            return

        # Opening per call keeps nothing buffered that a crash could lose.
        with open(self._path, "a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(
                file, fieldnames=self._columns, restval="", lineterminator="\n"
            )
            writer.writerow(row)

    def finalize(self, status: str) -> None:
        check_status(status)

    def __repr__(self) -> str:
        return f"CSVLogger(path={str(self._path)!r})"


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a metrics file; rows cut short by a crash are skipped."""
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = list(reader.fieldnames or [STEP_COLUMN])
        if columns[0] != STEP_COLUMN:
            raise ValueError(
                f"{path} is not a Kiln metrics file: its first column must be {STEP_COLUMN!r}. "
                f"Received: columns={columns}"
            )
        rows = []
        for row in reader:
            if _row_step(row) < 0 or None in row:
                logger.warning("Skipping a malformed row in %s: %s", path, row)
                continue
            rows.append({key: value or "" for key, value in row.items()})
    return columns, rows


def _drop_partial_line(path: Path) -> None:
    """Cut a last line that a crash left without its newline, so appends start on a new line."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    complete = data[: data.rfind(b"\n") + 1]
    logger.warning("Dropping an incomplete last line of %s: %r", path, data[len(complete) :])
    temp = path.with_name(f".{path.name}.partial")
    temp.write_bytes(complete)
    os.replace(temp, path)


def _row_step(row: Mapping[str, str | None]) -> int:
    try:
        return int(row.get(STEP_COLUMN) or "")
    except ValueError:
        return -1


def _write_atomic(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Write the whole file beside ``path`` and move it into place, so readers never see half."""
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise

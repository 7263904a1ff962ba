"""Metric records as numpy columns: what the charts, the dashboard cards and the health checks compute on.

A long run logs 100,000 reports or more, and the Monitoring tab refreshes every 2 s: walking a list of
dataclasses for every series of every figure would cost more than the refresh allows. So records become
one float array per field, built once and grown in place as new records arrive (`ColumnBuilder`).

Each split keeps each step once, in ascending order. A record for a step at or before the last one kept
(a resumed run logging a step again) replaces that step and every later one, as `train --resume`
truncates metrics.jsonl after its checkpoint. Fields a record does not report are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from .runs import MetricRecord

TRAIN_FIELDS = ("loss", "lr", "tokens_per_sec", "trained_tokens", "peak_memory_gb", "epoch", "grad_norm", "elapsed_s")
VAL_FIELDS = ("loss", "ppl", "val_time_s", "elapsed_s")
SPLITS = ("train", "val")


def is_usable(record: object) -> bool:
    """A record with a finite numeric step and a numeric loss (NaN included: a diverged run shows as such)."""
    return _usable(getattr(record, "step", None), getattr(record, "loss", None))


def is_usable_row(row: dict) -> bool:
    """`is_usable` for a metrics.jsonl object as parsed (a known split, a finite step, a numeric loss)."""
    return row.get("split") in SPLITS and _usable(row.get("step"), row.get("loss"))


def _usable(step: object, loss: object) -> bool:
    # `type(...) in` rather than isinstance: bool is an int subclass, and this runs once per metrics line.
    # A step must fit the int64 step column (a hand-edited 400-digit step is not a step).
    return type(step) in _NUMBER_TYPES and -_STEP_LIMIT < step < _STEP_LIMIT and type(loss) in _NUMBER_TYPES


_NUMBER_TYPES = (int, float)
_STEP_LIMIT = 2**63


@dataclass(frozen=True)
class SplitColumns:
    """One split's records: `step` ascending and unique, and one float array per field aligned with it.

    A snapshot: later records never change the arrays of a `SplitColumns` already handed out.
    """

    step: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.step)

    def __getitem__(self, field: str) -> np.ndarray:
        return self.values[field]

    def finite(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the finite values of `field`."""
        values = self.values[field]
        keep = np.isfinite(values)
        return self.step[keep], values[keep]

    def last(self, field: str) -> tuple[int, float] | None:
        """(step, value) of the last finite value of `field`, or None."""
        steps, values = self.finite(field)
        return (int(steps[-1]), float(values[-1])) if len(steps) else None


@dataclass(frozen=True)
class MetricColumns:
    """A run's metrics as columns: `train` (TRAIN_FIELDS) and `val` (VAL_FIELDS)."""

    train: SplitColumns
    val: SplitColumns

    @classmethod
    def from_records(cls, records: Sequence[MetricRecord]) -> MetricColumns:
        builder = ColumnBuilder()
        builder.extend(records)
        return builder.snapshot()

    def is_empty(self) -> bool:
        return len(self.train) == 0 and len(self.val) == 0


def as_columns(records: Sequence[MetricRecord] | MetricColumns) -> MetricColumns:
    """Columns as given, or built from records (as `runs.read_metrics` returns them)."""
    return records if isinstance(records, MetricColumns) else MetricColumns.from_records(records)


class _SplitBuilder:
    """Growing arrays of one split; `snapshot()` hands out views that later appends never touch."""

    def __init__(self, fields: tuple[str, ...]):
        self.fields = fields
        self._n = 0
        self._step = np.empty(64, dtype=np.int64)
        self._data = {f: np.empty(64) for f in fields}

    def extend(self, records: Sequence[MetricRecord]) -> None:
        if records:
            fields = {f: [getattr(r, f, None) for r in records] for f in self.fields}
            self._extend([int(r.step) for r in records], fields)

    def extend_rows(self, rows: Sequence[dict]) -> None:
        """As `extend`, from metrics.jsonl objects as parsed (no record objects: a first read of a long run
        builds its columns several times faster)."""
        if rows:
            steps = np.fromiter(map(itemgetter("step"), rows), dtype=np.int64, count=len(rows))
            self._extend_arrays(steps, {f: _row_floats(rows, f) for f in self.fields})

    def _extend(self, step_list: list[int], field_lists: dict[str, list]) -> None:
        self._extend_arrays(np.array(step_list, dtype=np.int64), {f: _floats(field_lists[f]) for f in self.fields})

    def _extend_arrays(self, steps: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        kept = _not_superseded(steps)
        values = {f: columns[f][kept] for f in self.fields}
        # Rows at or after the batch's lowest step are superseded by it (a resume logging steps again).
        start = int(np.searchsorted(self._step[: self._n], steps.min(), side="left"))
        if start < self._n:
            self._truncate(start)
        self._append(steps[kept], values)

    def _truncate(self, n: int) -> None:
        # New buffers rather than overwriting in place: snapshots already handed out keep their data.
        self._step = self._step[:n].copy()
        self._data = {f: a[:n].copy() for f, a in self._data.items()}
        self._n = n

    def _append(self, steps: np.ndarray, values: dict[str, np.ndarray]) -> None:
        end = self._n + len(steps)
        if end > len(self._step):
            capacity = max(end, 2 * len(self._step))  # doubling: appending row by row stays linear overall
            self._step = _grown(self._step, self._n, capacity)
            self._data = {f: _grown(a, self._n, capacity) for f, a in self._data.items()}
        self._step[self._n : end] = steps
        for f in self.fields:
            self._data[f][self._n : end] = values[f]
        self._n = end

    def snapshot(self) -> SplitColumns:
        return SplitColumns(self._step[: self._n], {f: a[: self._n] for f, a in self._data.items()})

    def restore(self, columns: SplitColumns) -> None:
        """Start from columns read before (copied: appends must not write into the caller's arrays)."""
        self._n = 0
        self._append(np.asarray(columns.step, dtype=np.int64), {f: columns[f] for f in self.fields})


class ColumnBuilder:
    """Metric records appended in file order, kept as columns (see the module docstring for repeated steps)."""

    def __init__(self) -> None:
        self._splits = {"train": _SplitBuilder(TRAIN_FIELDS), "val": _SplitBuilder(VAL_FIELDS)}

    def extend(self, records: Sequence[MetricRecord]) -> None:
        """Add records in file order; records without a numeric step and loss are skipped."""
        usable = [r for r in records if is_usable(r)]
        for split, builder in self._splits.items():
            builder.extend([r for r in usable if r.split == split])

    def extend_rows(self, rows: Sequence[dict]) -> None:
        """Add usable metrics.jsonl objects (`is_usable_row`) in file order."""
        for split, builder in self._splits.items():
            builder.extend_rows([r for r in rows if r["split"] == split])

    def snapshot(self) -> MetricColumns:
        return MetricColumns(self._splits["train"].snapshot(), self._splits["val"].snapshot())

    @classmethod
    def from_columns(cls, columns: MetricColumns) -> ColumnBuilder:
        """A builder that goes on from `columns` (as a builder fed the same records would)."""
        builder = cls()
        builder._splits["train"].restore(columns.train)
        builder._splits["val"].restore(columns.val)
        return builder


def _not_superseded(steps: np.ndarray) -> np.ndarray:
    """Mask of the records no later record replaces (a later record at the same or a lower step does)."""
    later_min = np.minimum.accumulate(steps[::-1])[::-1]  # lowest step from each record to the end
    kept = np.ones(len(steps), dtype=bool)
    kept[:-1] = steps[:-1] < later_min[1:]
    return kept


def _floats(values: list) -> np.ndarray:
    """Floats with None (not reported) as NaN, as is a value that cannot be read as a number (a hand edit)."""
    try:
        return np.array(values, dtype=float)
    except (TypeError, ValueError, OverflowError):
        return np.array([_float_or_nan(v) for v in values], dtype=float)


def _row_floats(rows: Sequence[dict], field: str) -> np.ndarray:
    """One field of every row as floats, NaN where absent or not a number."""
    try:  # the common case, every row has the field as a number: no per-row Python code but the lookup
        values = np.fromiter(map(itemgetter(field), rows), dtype=float, count=len(rows))
    except (KeyError, TypeError, ValueError, OverflowError):
        return _floats([row.get(field) for row in rows])
    return values


def _float_or_nan(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            return math.nan
    return math.nan


def _grown(array: np.ndarray, used: int, capacity: int) -> np.ndarray:
    grown = np.empty(capacity, dtype=array.dtype)
    grown[:used] = array[:used]
    return grown

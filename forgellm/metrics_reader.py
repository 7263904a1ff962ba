"""Reading metrics.jsonl incrementally into columns, and the column file that spares a first read.

The Monitoring tab refreshes every 2 s: each refresh reads only the lines appended since the last
(`MetricsCache`). A first read of a long run must parse every line once: 100,000 reports are 20 MB of
JSON and take about 0.4 s, mostly building Python objects. So the trainer, at each checkpoint, also
writes what it has logged so far as columns (`metrics_columns.npz`, the run folder's one derived
file): a reader that finds it, and finds metrics.jsonl still beginning with the bytes it was made from
(length and CRC-32), takes the columns from it and parses only the lines after it. Anything wrong with
the file (absent, stale, from another version, unreadable, inconsistent) only means the full read.

Nothing here imports MLX, Gradio or Plotly: the trainer writes the column file with this module.
"""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic, runs
from .metric_columns import TRAIN_FIELDS, VAL_FIELDS, ColumnBuilder, MetricColumns, SplitColumns, is_usable_row

# Raised whenever a column file from an older version would no longer equal what this version parses:
# its layout, a split's fields, or what a line adds (which lines are usable, how a repeated step replaces
# earlier ones). Files of another format are ignored.
COLUMN_FILE_FORMAT = 1
_TAIL = 64  # bytes before `offset` kept to recognise the file read so far (see `_read_new_lines`)

# ---- parsing ----------------------------------------------------------------------------------------


def parse_metric_rows(chunk: bytes) -> list[dict[str, Any]]:
    """The usable metrics.jsonl objects of whole lines, as parsed (a known split, a finite step, a loss)."""
    return [row for row in _parsed_lines(chunk) if type(row) is dict and is_usable_row(row)]


def _parsed_lines(chunk: bytes) -> list[Any]:
    """Each non-empty line's JSON value, garbage lines left out.

    All lines are parsed as one JSON array first: one call into a C parser instead of one per line (a
    100,000-line file reads about 3x faster), orjson's when it is installed (Gradio depends on it; it
    reads this file about 1.7x faster than the standard library). Only when that fails (some line is
    not JSON, is blank, or is not UTF-8) is each line parsed alone, to keep the good ones.
    """
    whole = chunk.rstrip(b"\n")
    if not whole:
        return []
    array = b"[" + whole.replace(b"\n", b",") + b"]"
    expected = whole.count(b"\n") + 1  # a line like `1, 2` would add values: then parse line by line
    for loads in _ARRAY_PARSERS:
        try:
            values = loads(array)
        except (ValueError, RecursionError):  # JSONDecodeError and orjson's error are ValueErrors
            continue
        if len(values) == expected:
            return values
        break
    values = []
    for line in chunk.decode("utf-8", errors="replace").split("\n"):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError):  # garbage, or absurdly deep nesting
            continue
    return values


def _array_parsers() -> tuple:
    # orjson rejects NaN and Infinity, which a diverged run writes: the standard library then reads them.
    try:
        import orjson
    except ImportError:
        return (json.loads,)
    return (orjson.loads, json.loads)


_ARRAY_PARSERS = _array_parsers()

# ---- the incremental reader --------------------------------------------------------------------------


@dataclass
class _CachedRun:
    """What has been read of one run's metrics.jsonl: bytes [0, offset) of the file `identity` (dev, inode),
    whose CRC-32 is `crc` and whose last bytes are `tail`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    identity: tuple[int, int] | None = None
    offset: int = 0
    crc: int = 0
    tail: bytes = b""
    columns: ColumnBuilder = field(default_factory=ColumnBuilder)

    def restart(self, identity: tuple[int, int] | None) -> None:
        # A new builder, not a cleared one: snapshots already handed out stay as they were.
        self.identity, self.offset, self.crc, self.tail, self.columns = identity, 0, 0, b"", ColumnBuilder()

    def advance(self, data: bytes | memoryview) -> None:
        """Count `data` (whole lines, just parsed) as read."""
        self.offset += len(data)
        self.crc = zlib.crc32(data, self.crc)
        self.tail = (self.tail + bytes(data[-_TAIL:]))[-_TAIL:]

    def same_file(self, f: io.BufferedReader, identity: tuple[int, int], size: int) -> bool:
        """Whether `f` is still the file read so far: same identity, not shorter, and the bytes before
        `offset` unchanged. The last check catches a resume that replaced the file twice between two
        reads, the newest file getting the inode of the one read (inodes are reused)."""
        if identity != self.identity or size < self.offset:
            return False
        if not self.tail:
            return True
        f.seek(self.offset - len(self.tail))
        return f.read(len(self.tail)) == self.tail


class MetricsCache:
    """Each run's metrics as columns, read incrementally: a refresh reads only the lines appended since the last.

    Only the columns are kept (about 100 bytes a report), not the parsed lines (about 1 KB each as
    Python objects): a run with a million reports stays about 100 MB, not 1 GB.

    A torn last line (the trainer is writing it) is left for the next read. When metrics.jsonl shrank
    or was replaced (a resume truncates it after its checkpoint, writing a new file), it is read again
    from the start. A read from the start uses the run's column file when it is valid (module
    docstring). Safe to call from several threads; the runs used least recently are dropped beyond
    `max_runs`.
    """

    def __init__(self, max_runs: int = 16):
        self.max_runs = max_runs
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, _CachedRun] = OrderedDict()

    def columns(self, run_dir: Path) -> MetricColumns:
        """The run's records as columns (a snapshot: later reads do not change it)."""
        cached = self._cached(run_dir)
        with cached.lock:
            _read_new_lines(cached, Path(run_dir))
            return cached.columns.snapshot()

    def write_column_file(self, run_dir: Path) -> int:
        """Write the run's column file from every whole line of its metrics.jsonl (the trainer, at its
        checkpoints); returns how many bytes of metrics.jsonl it covers. Atomic: a reader sees the
        previous file or this one."""
        cached = self._cached(run_dir)
        with cached.lock:
            _read_new_lines(cached, Path(run_dir))
            if cached.offset:
                atomic.write_bytes(Path(run_dir) / runs.METRIC_COLUMNS_FILE, _column_file_bytes(cached))
            return cached.offset

    def warm(self, run_dirs: Sequence[Path]) -> threading.Thread:
        """Read the runs' metrics on a background thread, so that the first refresh of each finds them read.

        A first read without a valid column file parses the whole file (0.3-0.5 s for 100,000 reports);
        a refresh asking for a run meanwhile waits for that run's read rather than reading it twice. At
        most `max_runs` are read.
        """

        def read_all() -> None:
            for run_dir in list(run_dirs)[: self.max_runs]:
                try:
                    self.columns(run_dir)
                except OSError:  # removed or unreadable meanwhile: its refresh will say so
                    continue

        thread = threading.Thread(target=read_all, name="forgellm-metrics-warm", daemon=True)
        thread.start()
        return thread

    def forget(self, run_dir: Path) -> None:
        with self._lock:
            self._runs.pop(os.path.abspath(run_dir), None)

    def _cached(self, run_dir: Path) -> _CachedRun:
        key = os.path.abspath(run_dir)
        with self._lock:
            cached = self._runs.pop(key, None) or _CachedRun()
            self._runs[key] = cached  # most recently used last
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        return cached


def _read_new_lines(cached: _CachedRun, run_dir: Path) -> None:
    try:
        f = open(run_dir / runs.METRICS_FILE, "rb")
    except FileNotFoundError:
        if cached.identity is not None:  # the file was removed: nothing is reported any more
            cached.restart(None)
        return
    with f:
        st = os.fstat(f.fileno())
        identity = (st.st_dev, st.st_ino)
        if not cached.same_file(f, identity, st.st_size):
            cached.restart(identity)
            _start_from_column_file(cached, run_dir, f, st.st_size)
        if st.st_size == cached.offset:
            return
        f.seek(cached.offset)
        chunk = f.read(st.st_size - cached.offset)
    whole = chunk.rfind(b"\n") + 1  # bytes up to the last complete line
    if whole == 0:
        return
    cached.advance(memoryview(chunk)[:whole])
    cached.columns.extend_rows(parse_metric_rows(chunk[:whole]))


# ---- the column file ---------------------------------------------------------------------------------


def _column_file_bytes(cached: _CachedRun) -> bytes:
    columns = cached.columns.snapshot()
    arrays: dict[str, np.ndarray] = {
        "format": np.array(COLUMN_FILE_FORMAT),
        "offset": np.array(cached.offset, dtype=np.int64),
        "crc32": np.array(cached.crc, dtype=np.int64),
    }
    for split, split_columns in (("train", columns.train), ("val", columns.val)):
        arrays[f"{split}.step"] = split_columns.step
        arrays.update({f"{split}.{name}": values for name, values in split_columns.values.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _start_from_column_file(cached: _CachedRun, run_dir: Path, metrics: io.BufferedReader, size: int) -> None:
    """Take the columns of the lines the column file covers, if it still describes this metrics.jsonl."""
    # Columns take at most 72 bytes a report, a line at least 40: a file claiming far more is not ours.
    loaded = read_column_file(run_dir / runs.METRIC_COLUMNS_FILE, max_bytes=8 * size + 2**20)
    if loaded is None:
        return
    offset, crc, columns = loaded
    if offset > size:
        return
    metrics.seek(0)
    prefix = metrics.read(offset)
    if len(prefix) != offset or not prefix.endswith(b"\n") or zlib.crc32(prefix) != crc:
        return  # metrics.jsonl was rewritten since (a resume from an earlier checkpoint, a hand edit)
    cached.advance(prefix)
    cached.columns = ColumnBuilder.from_columns(columns)


def read_column_file(path: Path, max_bytes: int | None = None) -> tuple[int, int, MetricColumns] | None:
    """(offset, crc32, columns) of a column file, or None when it is absent or not one this version wrote.

    Any problem means None, never an error: the file is derived, and a reader can always parse
    metrics.jsonl instead. `max_bytes` bounds what its arrays may hold (checked before they are read).
    """
    try:
        if max_bytes is not None and not _stored_within(path, max_bytes):
            return None
        with np.load(path, allow_pickle=False) as data:
            if data["format"].shape != () or int(data["format"]) != COLUMN_FILE_FORMAT:
                return None
            offset, crc = int(data["offset"]), int(data["crc32"])
            train = _split_columns(data, "train", TRAIN_FIELDS)
            val = _split_columns(data, "val", VAL_FIELDS)
    except Exception:  # noqa: BLE001 - absent, unreadable, truncated, not a .npz, a field missing, huge shapes...
        return None
    if train is None or val is None or offset <= 0 or not 0 <= crc < 2**32:
        return None
    return offset, crc, MetricColumns(train, val)


def _stored_within(path: Path, max_bytes: int) -> bool:
    """Whether the .npz's members are stored uncompressed (as `np.savez` writes them) and hold at most
    `max_bytes` in all."""
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    stored = all(m.compress_type == zipfile.ZIP_STORED for m in members)
    return stored and sum(m.file_size for m in members) <= max_bytes


def _split_columns(data: Any, split: str, fields: tuple[str, ...]) -> SplitColumns | None:
    """One split's arrays, or None unless they are what `ColumnBuilder` makes (ascending unique int64
    steps, one float64 value per step for every field)."""
    step = data[f"{split}.step"]
    values = {name: data[f"{split}.{name}"] for name in fields}
    if step.dtype != np.int64 or step.ndim != 1 or (len(step) > 1 and not bool(np.all(np.diff(step) > 0))):
        return None
    if any(v.dtype != np.float64 or v.shape != step.shape for v in values.values()):
        return None
    return SplitColumns(step, values)

"""The column file (metrics_columns.npz): a first read takes the columns it covers and parses only the
lines after it, and anything wrong with it only means the full read."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from fake_runs import assert_same_columns, clean_curve, full_read, metrics_text, train, val, write_run

from forgellm import runs
from forgellm.metrics_reader import MetricsCache, read_column_file


def append(run_dir: Path, records: list[dict]) -> None:
    with open(run_dir / runs.METRICS_FILE, "a") as f:
        f.write(metrics_text(records))


def rewrite_column_file(run_dir: Path, change) -> None:
    """Load the column file's arrays, let `change` edit the dict, save it back."""
    path = run_dir / runs.METRIC_COLUMNS_FILE
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def run_with_column_file(tmp_path: Path) -> Path:
    records = clean_curve(steps=3000)
    records[5]["loss"] = float("nan")  # a diverging report survives the file as NaN
    write_run(tmp_path, records)
    MetricsCache().write_column_file(tmp_path)
    return tmp_path


def test_the_column_file_holds_what_a_full_read_builds(run_with_column_file: Path) -> None:
    offset, crc, columns = read_column_file(run_with_column_file / runs.METRIC_COLUMNS_FILE)
    assert offset == (run_with_column_file / runs.METRICS_FILE).stat().st_size
    assert len(columns.train) == 300 and len(columns.val) == 16
    assert_same_columns(columns, full_read(run_with_column_file))


def test_a_first_read_takes_the_covered_lines_from_the_column_file(run_with_column_file: Path) -> None:
    # Mark the file's losses: a reader that parsed metrics.jsonl instead would not see the marks.
    rewrite_column_file(run_with_column_file, lambda a: a.update({"train.loss": a["train.loss"] + 100.0}))
    append(run_with_column_file, [train(3010, 0.5), val(3010, 0.6)])
    columns = MetricsCache().columns(run_with_column_file)
    expected = full_read(run_with_column_file)
    np.testing.assert_array_equal(columns.train.step, expected.train.step)
    np.testing.assert_array_equal(columns.train["loss"][:-1], expected.train["loss"][:-1] + 100.0)
    assert columns.train["loss"][-1] == 0.5 and columns.val.last("loss") == (3010, 0.6)  # the tail was parsed


def _mark_losses(arrays: dict) -> None:
    """Add 100 to the file's training losses: a reader that used the file shows the marks."""
    arrays["train.loss"] = arrays["train.loss"] + 100.0


def test_a_column_file_written_after_several_reads_is_used(tmp_path: Path) -> None:
    """The trainer reads its metrics a little at each checkpoint: the CRC carried across reads must be
    the CRC of the whole prefix, or every file it writes after the first would be refused."""
    records = clean_curve(steps=600)
    write_run(tmp_path, records[:20])
    trainer_side = MetricsCache(max_runs=1)
    trainer_side.columns(tmp_path)
    append(tmp_path, records[20:40])
    trainer_side.columns(tmp_path)
    append(tmp_path, records[40:])
    offset = trainer_side.write_column_file(tmp_path)
    data = (tmp_path / runs.METRICS_FILE).read_bytes()
    assert offset == len(data) and read_column_file(tmp_path / runs.METRIC_COLUMNS_FILE)[1] == zlib.crc32(data)
    rewrite_column_file(tmp_path, _mark_losses)
    assert MetricsCache().columns(tmp_path).train["loss"][0] == full_read(tmp_path).train["loss"][0] + 100.0


def test_a_file_replaced_under_the_same_inode_is_read_again(tmp_path: Path) -> None:
    """Two resumes between two refreshes can leave the newest metrics.jsonl on the inode of the one read
    (inodes are reused): same identity, not shorter, but other bytes before the offset read."""
    write_run(tmp_path, [train(step, 3.0) for step in range(1, 6)])
    cache = MetricsCache()
    assert len(cache.columns(tmp_path).train) == 5
    path = tmp_path / runs.METRICS_FILE
    inode = path.stat().st_ino
    path.write_text(metrics_text([val(0, 4.5), *[train(step, 1.0 + step / 100) for step in range(1, 21)]]))
    assert path.stat().st_ino == inode  # rewritten in place: the same identity
    assert_same_columns(cache.columns(tmp_path), full_read(tmp_path))


def test_a_resumed_run_logging_steps_again_supersedes_the_column_file(run_with_column_file: Path) -> None:
    append(run_with_column_file, [train(2500, 9.0), train(2510, 8.0)])  # steps at or before the last kept
    columns = MetricsCache().columns(run_with_column_file)
    assert_same_columns(columns, full_read(run_with_column_file))
    assert columns.train.last("loss") == (2510, 8.0)


@pytest.mark.parametrize(
    "rewrite",
    [
        "same size, earlier byte changed",  # a hand edit: the CRC differs
        "shorter than the file covers",  # a resume from an earlier checkpoint truncated it
        "a different file",
    ],
)
def test_a_column_file_that_no_longer_describes_the_metrics_is_ignored(
    run_with_column_file: Path, rewrite: str
) -> None:
    path = run_with_column_file / runs.METRICS_FILE
    data = path.read_bytes()
    if rewrite.startswith("same size"):
        path.write_bytes(data.replace(b'"loss": 4.0', b'"loss": 7.0', 1))
        assert len(path.read_bytes()) == len(data)
    elif rewrite.startswith("shorter"):
        path.write_bytes(data[: data.index(b"\n", len(data) // 2) + 1])
    else:
        write_run(run_with_column_file, [val(0, 4.5), train(10, 3.0)])
    assert_same_columns(MetricsCache().columns(run_with_column_file), full_read(run_with_column_file))


def _not_a_zip(path: Path) -> None:
    path.write_bytes(b"not a column file")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _zip_of_pickles(path: Path) -> None:  # np.load must not unpickle what a run folder holds
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Unpickled()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("train.loss.npy", buffer.getvalue())


class _Unpickled:
    """Records being unpickled: a reader that unpickles what a run folder holds would run its code."""

    seen = False

    def __reduce__(self):
        return (_note_unpickled, ())


def _note_unpickled() -> None:
    _Unpickled.seen = True


ARRAY_EDITS = {
    "another format": lambda a: a.update(format=np.array(99)),
    "a field missing": lambda a: a.pop("val.ppl"),
    "steps not ascending": lambda a: a.update({"train.step": a["train.step"][::-1].copy()}),
    "a column shorter than its steps": lambda a: a.update({"train.lr": a["train.lr"][:-1]}),
    "a column of another type": lambda a: a.update({"train.loss": a["train.loss"].astype(np.float32)}),
    "a negative offset": lambda a: a.update(offset=np.array(-5)),
    "an offset past the file": lambda a: a.update(offset=np.array(10**9)),
    "an offset mid-line": lambda a: a.update(offset=a["offset"] - 3),
    "a CRC out of range": lambda a: a.update(crc32=np.array(2**40)),
}
FILE_EDITS = {
    "not a zip": _not_a_zip,
    "truncated": _truncated,
    "empty": _empty,
    "a folder": _a_folder,
    "pickled objects": _zip_of_pickles,
}


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the pickled member is added under a name in use
@pytest.mark.parametrize("damage", [*ARRAY_EDITS, *FILE_EDITS])
def test_a_damaged_column_file_only_means_the_full_read(run_with_column_file: Path, damage: str) -> None:
    path = run_with_column_file / runs.METRIC_COLUMNS_FILE
    rewrite_column_file(run_with_column_file, _mark_losses)  # used, the file would show its marks
    if damage in ARRAY_EDITS:
        rewrite_column_file(run_with_column_file, ARRAY_EDITS[damage])
    else:
        FILE_EDITS[damage](path)
    append(run_with_column_file, [train(3010, 0.5)])
    assert_same_columns(MetricsCache().columns(run_with_column_file), full_read(run_with_column_file))
    assert not _Unpickled.seen


def test_a_column_file_claiming_more_than_the_metrics_could_make_is_not_read(run_with_column_file: Path) -> None:
    """A header can declare any shape: a file whose arrays would dwarf metrics.jsonl is refused unread."""
    rewrite_column_file(run_with_column_file, _mark_losses)
    size = (run_with_column_file / runs.METRICS_FILE).stat().st_size
    assert read_column_file(run_with_column_file / runs.METRIC_COLUMNS_FILE, max_bytes=size // 10) is None
    padded = lambda a: a.update(padding=np.zeros(size + 2**20))  # noqa: E731 - 8x the metrics file and more
    rewrite_column_file(run_with_column_file, padded)
    assert_same_columns(MetricsCache().columns(run_with_column_file), full_read(run_with_column_file))


def test_the_column_file_is_written_from_whole_lines_only(tmp_path: Path) -> None:
    write_run(tmp_path, [val(0, 4.0), train(1, 3.0)])
    with open(tmp_path / runs.METRICS_FILE, "a") as f:
        f.write('{"step": 2, "split": "train", "lo')  # the trainer is writing this one
    cache = MetricsCache()
    cache.write_column_file(tmp_path)
    offset, _, columns = read_column_file(tmp_path / runs.METRIC_COLUMNS_FILE)
    assert offset == len(metrics_text([val(0, 4.0), train(1, 3.0)]))
    assert columns.train.step.tolist() == [1]
    with open(tmp_path / runs.METRICS_FILE, "a") as f:
        f.write('ss": 2.5}\n')
    assert MetricsCache().columns(tmp_path).train.last("loss") == (2, 2.5)


def test_no_metrics_writes_no_column_file(tmp_path: Path) -> None:
    MetricsCache().write_column_file(tmp_path)
    assert not (tmp_path / runs.METRIC_COLUMNS_FILE).exists()

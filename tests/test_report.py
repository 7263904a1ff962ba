"""`forgellm report`: the exported folder opens with no network, its CSV gives back the logged numbers,
its PNG is a real image, and a folder that is not a report is never overwritten."""

from __future__ import annotations

import csv
import json
import math
import re
import struct
from pathlib import Path

import pytest
from fake_runs import clean_curve, train, val, write_run
from helpers import run_cli

from forgellm import report, runs
from forgellm.errors import ForgeError
from forgellm.runs import RunStatus


def _overfitting_run(run_dir: Path) -> Path:
    records = [r for r in clean_curve() if r["split"] == "train"] + [val(0, 4.0)]
    records += [val(s, 2.0 - s / 10_000) for s in range(200, 1401, 200)]
    records += [val(s, 1.86 + (s - 1400) / 20_000) for s in range(1600, 2001, 200)]
    records.append(train(2010, float("nan")))  # the trainer logged a NaN before failing
    status = RunStatus(state="failed", step=2010, total_steps=3000, error="training loss became nan at step 2010")
    return write_run(
        run_dir, records, status=status, config={"model": "tiny", "learning_rate": 0.001}, checkpoints=(1400, 2000)
    )


def test_report_files(tmp_path: Path) -> None:
    run_dir = _overfitting_run(tmp_path / "my-run")
    written = report.export_report(run_dir, tmp_path / "out")
    names = [p.name for p in written]
    assert names == [report.HTML_FILE, report.LOSS_PNG, report.METRICS_CSV, report.REPORT_MARKER]
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in written)

    page = (tmp_path / "out" / report.HTML_FILE).read_text(encoding="utf-8")
    # Opens offline: plotly.js is inline, once; no script or stylesheet is fetched from anywhere.
    assert not re.search(r"<script[^>]+src=", page) and "<link" not in page
    assert page.count("Plotly.newPlot") == 4 and len(page) > 1_000_000
    assert "my-run" in page and "failed" in page and "3,000" in page  # cards
    assert "overfitting" in page and "Keep the best checkpoint, step 1,400" in page  # health
    assert "NaN or inf at step 2,010" in page
    assert str(runs.checkpoint_dir(run_dir, 1400)) in page  # best checkpoints
    assert "learning_rate: 0.001" in page  # config

    marker = json.loads((tmp_path / "out" / report.REPORT_MARKER).read_text())
    assert marker["run"] == str(run_dir.resolve()) and marker["files"] == names[:3]


def test_csv_gives_back_the_logged_numbers(tmp_path: Path) -> None:
    run_dir = _overfitting_run(tmp_path / "run")
    report.export_report(run_dir, tmp_path / "out")
    with open(tmp_path / "out" / report.METRICS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    logged = runs.read_metrics(run_dir)
    assert len(rows) == len(logged) == 200 + 1 + 1 + 10
    for row, record in zip(rows, logged, strict=True):
        assert row["split"] == record.split and int(row["step"]) == record.step
        loss = float(row["loss"])
        assert loss == record.loss or (math.isnan(loss) and math.isnan(record.loss))
        if record.split == "train" and record.lr is not None:
            assert float(row["lr"]) == record.lr and float(row["tokens_per_sec"]) == record.tokens_per_sec
            assert int(row["trained_tokens"]) == record.trained_tokens and row["ppl"] == ""
        if record.split == "val":
            assert float(row["ppl"]) == record.ppl and row["lr"] == ""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_loss_png_is_an_image(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", [train(s, 3.0 - s / 200_000) for s in range(1, 100_001)])
    report.export_report(run_dir, tmp_path / "out")
    assert _png_size((tmp_path / "out" / report.LOSS_PNG).read_bytes()) == (720, 400)


def test_a_run_without_metrics_still_reports(tmp_path: Path) -> None:
    run_dir = tmp_path / "new-run"
    run_dir.mkdir()
    (run_dir / runs.STATUS_FILE).write_text("{broken")
    report.export_report(run_dir, tmp_path / "out")
    page = (tmp_path / "out" / report.HTML_FILE).read_text(encoding="utf-8")
    assert "no data yet" in page and "unknown" in page and "No problems seen" in page
    header = (tmp_path / "out" / report.METRICS_CSV).read_text()
    assert header == ",".join(report.CSV_FIELDS) + "\n"


def test_a_folder_that_is_not_a_report_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    run_dir = _overfitting_run(tmp_path / "run")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ForgeError, match="not written by ForgeLLM") as refused:
        report.export_report(run_dir, mine)
    assert "new or empty folder" in refused.value.message
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file.html"
    a_file.write_text("mine")
    with pytest.raises(ForgeError):
        report.export_report(run_dir, a_file)
    assert a_file.read_text() == "mine"


def test_an_empty_folder_or_an_earlier_report_is_written_into(tmp_path: Path) -> None:
    run_dir = _overfitting_run(tmp_path / "run")
    out = tmp_path / "out"
    out.mkdir()
    report.export_report(run_dir, out)
    (out / "stale.txt").write_text("from an earlier report")  # replaced whole: nothing stale survives
    first = (out / report.REPORT_MARKER).read_text()
    report.export_report(run_dir, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [report.HTML_FILE, report.LOSS_PNG, report.METRICS_CSV, report.REPORT_MARKER]
    )
    assert json.loads(first)["run"] == json.loads((out / report.REPORT_MARKER).read_text())["run"]


def test_cli_report(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _overfitting_run(home / "runs" / "my-run")
    out = tmp_path / "out"
    done = run_cli("report", "my-run", "--out", str(out), env={"FORGELLM_HOME": str(home)})
    names = (report.HTML_FILE, report.LOSS_PNG, report.METRICS_CSV, report.REPORT_MARKER)
    assert done.stdout.split() == [str(out / name) for name in names]
    assert all((out / name).is_file() for name in names)
    refused = run_cli("report", "my-run", "--out", str(home / "runs"), env={"FORGELLM_HOME": str(home)}, check=False)
    assert refused.returncode == 2 and "not written by ForgeLLM" in refused.stderr

"""The dashboard's logic on hand-written run folders: incremental metrics reading, chart data, cards,
health warnings on known curves, best checkpoints, comparing runs, and the `runs`/`compare` commands."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from fake_runs import clean_curve, metrics_text, train, val, write_run
from helpers import run_cli

from forgellm import charts, dashboard, metrics_reader, procs, runs
from forgellm.metric_columns import MetricColumns
from forgellm.runs import RunStatus, record_from_dict

# ---- incremental reading ---------------------------------------------------------------------------


def _append(run_dir: Path, text: str) -> None:
    with open(run_dir / runs.METRICS_FILE, "a") as f:
        f.write(text)


def _steps(records) -> list[int]:
    return [r.step for r in records]


def _train(cache: metrics_reader.MetricsCache, run_dir: Path) -> list[tuple[int, float]]:
    columns = cache.columns(run_dir).train
    return list(zip(columns.step.tolist(), columns["loss"].tolist(), strict=True))


def test_only_lines_appended_since_the_last_read_are_read(tmp_path: Path) -> None:
    write_run(tmp_path, [train(1, 3.0), train(2, 2.9), train(3, 2.8)])
    cache = metrics_reader.MetricsCache()
    assert _train(cache, tmp_path) == [(1, 3.0), (2, 2.9), (3, 2.8)]
    # Change an early line in place (same size, same file): a cache that re-read everything would see it.
    path = tmp_path / runs.METRICS_FILE
    path.write_bytes(path.read_bytes().replace(b'"loss": 3.0', b'"loss": 7.0'))
    _append(tmp_path, metrics_text([train(4, 2.7), val(4, 2.75)]))
    assert _train(cache, tmp_path) == [(1, 3.0), (2, 2.9), (3, 2.8), (4, 2.7)]
    assert list(cache.columns(tmp_path).val["loss"]) == [2.75]
    assert _train(metrics_reader.MetricsCache(), tmp_path)[0] == (1, 7.0)  # the edit was real; a new cache reads it
    assert _steps(dashboard.read_records(tmp_path)) == [1, 2, 3, 4, 4]


def test_a_torn_last_line_is_read_once_it_is_complete(tmp_path: Path) -> None:
    write_run(tmp_path, [train(1, 3.0)])
    _append(tmp_path, '{"step": 2, "split": "train", "lo')
    cache = metrics_reader.MetricsCache()
    assert _train(cache, tmp_path) == [(1, 3.0)] and _steps(dashboard.read_records(tmp_path)) == [1]
    _append(tmp_path, 'ss": 2.5}\n')
    assert _train(cache, tmp_path) == [(1, 3.0), (2, 2.5)]
    assert [(r.step, r.loss) for r in dashboard.read_records(tmp_path)] == [(1, 3.0), (2, 2.5)]


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    garbage = [
        "not json",
        '{"split": [], "step": 5, "loss": 1.0}',  # unhashable split
        '{"step": "x", "split": "train", "loss": 1.0}',
        '{"step": 6, "split": "train", "loss": "high"}',
        '{"step": 7, "split": "train"}',  # no loss
        '{"step": 8, "split": "probe", "score": 0.5}',  # a kind this version does not know
        "[1, 2]",
        "[" * 100_000,  # nested too deep for the parser
        "",
    ]
    text = metrics_text([train(1, 3.0)]) + "\n".join(garbage) + "\n" + metrics_text([val(10, 2.0)])
    (tmp_path / runs.METRICS_FILE).write_bytes(text.encode() + b"\xff\xfe{bad utf-8}\n" + b'{"step": 11, "spl')
    cache = metrics_reader.MetricsCache()
    records = dashboard.read_records(tmp_path)
    assert [(r.split, r.step, r.loss) for r in records] == [("train", 1, 3.0), ("val", 10, 2.0)]
    columns = cache.columns(tmp_path)
    assert list(columns.train.step) == [1] and list(columns.val.step) == [10]


def test_warming_reads_runs_in_the_background_before_their_first_refresh(tmp_path: Path) -> None:
    warm_run, cold_run = tmp_path / "warm", tmp_path / "cold"
    later = [train(step, 2.0) for step in range(2, 6)]  # the edit below is far from the last line read
    for run_dir in (warm_run, cold_run):
        write_run(run_dir, [train(1, 3.0), *later])
    cache = metrics_reader.MetricsCache()
    cache.warm([warm_run, tmp_path / "removed-meanwhile"]).join(timeout=30)
    for run_dir in (warm_run, cold_run):  # an in-place edit is seen only by a run not read yet
        path = run_dir / runs.METRICS_FILE
        path.write_bytes(path.read_bytes().replace(b'"loss": 3.0', b'"loss": 7.0'))
    assert _train(cache, warm_run)[0] == (1, 3.0)
    assert _train(cache, cold_run)[0] == (1, 7.0)


def test_numbers_beyond_any_float_or_step_are_read_without_crashing(tmp_path: Path) -> None:
    huge = "1" + "0" * 400  # valid JSON; no float holds it
    lines = [
        f'{{"step": {huge}, "split": "train", "loss": 1.0}}',  # not a step
        '{"step": 1e300, "split": "train", "loss": 1.0}',  # finite, but no int64 step
        f'{{"step": 2, "split": "train", "loss": 2.0, "lr": {huge}}}',
        '{"step": 3, "split": "train", "loss": NaN, "lr": 0.001}',  # a diverged step, as Python writes it
    ]
    (tmp_path / runs.METRICS_FILE).write_text("\n".join(lines) + "\n")
    train_columns = metrics_reader.MetricsCache().columns(tmp_path).train
    assert train_columns.step.tolist() == [2, 3]
    assert math.isnan(train_columns["lr"][0]) and train_columns["lr"][1] == 0.001
    assert train_columns["loss"][0] == 2.0 and math.isnan(train_columns["loss"][1])
    assert _steps(dashboard.read_records(tmp_path)) == [2, 3]


def test_a_resumed_run_is_read_again_from_the_start(tmp_path: Path) -> None:
    write_run(tmp_path, [train(s, 3.0 - s / 10) for s in range(1, 11)])
    cache = metrics_reader.MetricsCache()
    assert len(cache.columns(tmp_path).train) == 10
    runs.truncate_metrics_after(tmp_path, 5)  # what `train --resume` from checkpoint 5 does: a new file
    _append(tmp_path, metrics_text([train(s, 9.0) for s in (6, 7)]))
    trained = _train(cache, tmp_path)
    assert [s for s, _ in trained] == [1, 2, 3, 4, 5, 6, 7] and [loss for _, loss in trained[-2:]] == [9.0, 9.0]
    # Shrunk in place (same file): read again too.
    with open(tmp_path / runs.METRICS_FILE, "r+") as f:
        f.truncate(0)
    _append(tmp_path, metrics_text([train(1, 5.0)]))
    assert _train(cache, tmp_path) == [(1, 5.0)]


def test_columns_handed_out_do_not_change_on_later_reads(tmp_path: Path) -> None:
    write_run(tmp_path, [train(1, 3.0), train(2, 2.0)])
    cache = metrics_reader.MetricsCache()
    columns = cache.columns(tmp_path)
    runs.truncate_metrics_after(tmp_path, 1)
    _append(tmp_path, metrics_text([train(2, 8.0), train(3, 7.0)]))
    assert list(cache.columns(tmp_path).train["loss"]) == [3.0, 8.0, 7.0]
    assert list(columns.train["loss"]) == [3.0, 2.0]
    _append(tmp_path, metrics_text([train(4, 6.0)]))  # grown in place this time: the snapshot still holds
    assert list(cache.columns(tmp_path).train["loss"]) == [3.0, 8.0, 7.0, 6.0] and len(columns.train) == 2


def test_several_threads_read_while_the_trainer_appends(tmp_path: Path) -> None:
    """Each read is a whole prefix of what the trainer wrote, whatever the interleaving; the last is all."""
    write_run(tmp_path, [])
    cache = metrics_reader.MetricsCache()
    total, seen, errors = 1500, [], []

    def trainer() -> None:
        for step in range(1, total + 1):
            line = json.dumps(train(step, 1.0 + 1 / step)) + "\n"
            half = len(line) // 2
            _append(tmp_path, line[:half])  # torn for a moment, as a trainer mid-write
            _append(tmp_path, line[half:])

    def reader() -> None:
        try:
            for _ in range(200):
                steps = cache.columns(tmp_path).train.step.tolist()
                assert steps == list(range(1, len(steps) + 1))
                seen.append(len(steps))
        except AssertionError as e:  # surfaced in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=trainer), *(threading.Thread(target=reader) for _ in range(3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.columns(tmp_path).train.step.tolist() == list(range(1, total + 1))
    assert len(set(seen)) > 1  # the readers did overlap with the writing


def test_no_metrics_file_gives_no_records_and_no_data_figures(tmp_path: Path) -> None:
    cache = metrics_reader.MetricsCache()
    assert dashboard.read_records(tmp_path) == [] and cache.columns(tmp_path).is_empty()
    board = dashboard.refresh(tmp_path, cache)
    for fig in (board.loss, board.perplexity, board.learning_rate, board.throughput):
        assert len(fig.data) == 0 and fig.layout.annotations[0].text == "no data yet"
    assert board.cards.state == "unknown" and board.cards.step == "0" and board.warnings == []


# ---- chart data ------------------------------------------------------------------------------------


def _tensorboard_smoothing(values: list[float], weight: float) -> list[float]:
    """TensorBoard's loop (tf_smoothing), the reference for `charts.smooth`."""
    last, count, out = 0.0, 0, []
    for value in values:
        last = last * weight + (1 - weight) * value
        count += 1
        out.append(last / (1 - weight**count) if weight < 1 else last)
    return out


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_smoothing_is_tensorboards(weight: float) -> None:
    values = 2.0 + np.random.default_rng(1).normal(0, 0.3, 20_000).cumsum() / 100
    smoothed = charts.smooth(values, weight)
    np.testing.assert_allclose(smoothed, _tensorboard_smoothing(values.tolist(), weight), rtol=1e-9)
    assert smoothed[0] == pytest.approx(values[0])  # debiased: the first point is not pulled towards 0
    with pytest.raises(ValueError, match="between 0 and 0.99"):
        charts.smooth(values, 0.995)


def test_downsampling_keeps_the_extremes() -> None:
    x = np.arange(100_000)
    y = np.sin(x / 5000) + 3.0
    y[31_337] = 10.0  # a spike
    y[77_777] = -5.0  # the lowest point
    dx, dy = charts.downsample_extremes(x, y)
    assert len(dx) <= charts.MAX_POINTS and dx[0] == 0 and dx[-1] == 99_999
    assert 31_337 in dx and 77_777 in dx and dy.max() == 10.0 and dy.min() == -5.0
    assert np.all(np.diff(dx) > 0) and np.array_equal(y[dx], dy)


def _long_run(n: int = 100_000) -> MetricColumns:
    records = [train(s, 2.0 + 1 / s, lr=1e-4, tokens_per_sec=900.0, peak_memory_gb=2.0) for s in range(1, n + 1)]
    records += [val(s, 2.1 + 1 / s + (0.2 if s == 50_000 else 0)) for s in range(100, n + 1, 100)]
    records[70_000]["loss"] = 1.0  # one report far below the rest: must stay visible
    return MetricColumns.from_records([record_from_dict(r) for r in records])


def _trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_loss_figure_smoothed_raw_validation_and_best() -> None:
    columns = _long_run()
    fig = charts.loss_figure(columns, smoothing=0.6, log_y=True)
    assert [t.name for t in fig.data] == ["train", "train (smoothed)", "validation", "best validation"]
    raw, smoothed = _trace(fig, "train"), _trace(fig, "train (smoothed)")
    assert raw.opacity < 1 and smoothed.opacity in (None, 1)  # the reported losses faint, the smoothed line solid
    assert all(len(t.x) <= charts.MAX_POINTS for t in fig.data)
    assert 1.0 in list(raw.y)  # the outlier survived downsampling
    best = _trace(fig, "best validation")
    assert (best.x[0], best.y[0]) == (100_000, pytest.approx(2.1 + 1 / 100_000))
    assert fig.layout.yaxis.type == "log"
    assert len(fig.to_json()) < 300_000  # re-sent every refresh


def test_perplexity_learning_rate_and_throughput_figures() -> None:
    records = [record_from_dict(r) for r in clean_curve()]
    columns = MetricColumns.from_records(records)
    ppl = charts.perplexity_figure(records, smoothing=0.0)
    val_steps, val_losses = columns.val.finite("loss")
    validation = _trace(ppl, "validation")
    assert list(validation.x) == list(val_steps)
    np.testing.assert_allclose(list(validation.y), np.exp(val_losses))
    np.testing.assert_allclose(list(_trace(ppl, "train").y), np.exp(columns.train["loss"]))
    assert [t.name for t in charts.perplexity_figure(records, smoothing=0.6).data][0] == "train (smoothed)"
    lr = charts.learning_rate_figure(records)
    assert list(lr.data[0].y) == [1e-3] * 200
    tm = charts.throughput_memory_figure(records)
    assert [t.name for t in tm.data] == ["tokens/s", "peak memory (GB)"]
    assert tm.data[1].yaxis == "y2" and tm.layout.yaxis2.overlaying == "y"


def test_legends_sit_below_the_plot_not_on_the_title() -> None:
    records = [record_from_dict(r) for r in clean_curve()]
    for fig in (
        charts.loss_figure(records, smoothing=0.6),
        charts.perplexity_figure(records),
        charts.learning_rate_figure(records),
        charts.throughput_memory_figure(records),
    ):
        assert fig.layout.title.text and fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"


def test_a_step_logged_again_replaces_the_earlier_and_later_ones() -> None:
    records = [train(s, 3.0) for s in range(1, 11)] + [train(6, 1.0), train(7, 0.5)]
    columns = MetricColumns.from_records([record_from_dict(r) for r in records])
    assert list(columns.train.step) == [1, 2, 3, 4, 5, 6, 7]
    assert list(columns.train["loss"]) == [3.0] * 5 + [1.0, 0.5]


# ---- cards -----------------------------------------------------------------------------------------


def test_cards_of_a_running_run(tmp_path: Path) -> None:
    status = RunStatus(
        state="running",
        pid=os.getpid(),
        pid_start=procs.process_start_time(os.getpid()),
        step=2000,
        total_steps=4000,
        eta_s=3725,
    )
    write_run(tmp_path, clean_curve(), status=status, checkpoints=(1000, 2000))
    cards = dashboard.cards(tmp_path, dashboard.read_records(tmp_path), runs.read_status(tmp_path))
    last_train = dashboard.read_records(tmp_path)[-2]
    assert cards.state == "running" and cards.step == "2,000 / 4,000" and cards.progress == 0.5
    assert cards.epoch == "2.00" and cards.train_loss == f"{last_train.loss:.4f}"
    val_loss = 1.5 + 2.0 * math.exp(-2000 / 800) + 0.01
    assert cards.val_loss == f"{val_loss:.4f} (step 2,000)"
    assert cards.val_perplexity == f"{math.exp(val_loss):,.2f}"
    assert cards.best_val == f"{val_loss:.4f} (step 2,000)"
    assert cards.trained_tokens == "1.02M" and cards.peak_memory == "1.25 GB" and cards.learning_rate == "1.00e-03"
    assert cards.elapsed == "16m 40s" and cards.eta == "1h 02m"
    assert cards.checkpoints == "2 kept, latest step 2,000"
    assert cards.as_dict()["progress"] == "50%"


def test_cards_without_a_readable_status(tmp_path: Path) -> None:
    write_run(tmp_path, [train(10, 2.0)])
    cards = dashboard.cards(tmp_path, dashboard.read_records(tmp_path), None)
    assert cards.state == "unknown" and cards.step == "10" and cards.progress == 0.0 and cards.eta == "-"
    (tmp_path / runs.STATUS_FILE).write_text("{not json")
    board = dashboard.refresh(tmp_path)
    assert board.cards.state == "unknown" and board.cards.train_loss == "2.0000"
    (tmp_path / runs.STATUS_FILE).write_text('{"state": "running", "step": "x", "total_steps": [], "eta_s": "soon"}')
    assert dashboard.refresh(tmp_path).cards.step == "10"  # nonsense values are ignored, not an error


# ---- health ----------------------------------------------------------------------------------------


def _kinds(records: list[dict], status: RunStatus | None = None, **thresholds) -> list[str]:
    return [w.kind for w in dashboard.health([record_from_dict(r) for r in records], status, **thresholds)]


def _warning(records: list[dict], kind: str) -> dashboard.HealthWarning:
    return next(w for w in dashboard.health([record_from_dict(r) for r in records]) if w.kind == kind)


def test_a_clean_run_has_no_warning() -> None:
    assert _kinds(clean_curve()) == []
    assert _kinds([]) == [] and _kinds(clean_curve()[:5]) == []


def _with_val(records: list[dict], losses: dict[int, float]) -> list[dict]:
    kept = [r for r in records if r["split"] == "train" or r["step"] == 0]
    return kept + [val(step, loss) for step, loss in losses.items()]


def test_overfitting_names_the_best_checkpoint() -> None:
    curve = clean_curve()
    losses = {s: 1.5 + 2.0 * math.exp(-s / 800) + 0.01 for s in range(200, 1401, 200)}
    losses.update({1600: losses[1400] + 0.01, 1800: losses[1400] + 0.02, 2000: losses[1400] + 0.03})
    records = _with_val(curve, losses)
    assert _kinds(records) == ["overfitting"]
    warning = _warning(records, "overfitting")
    assert "rose for 3 evaluations" in warning.message and "step 1,400" in warning.message
    assert "step 1,400" in warning.recommendation and "dropout" in warning.recommendation
    # Rising only twice in a row is not enough with rising_evals=3 (the gap then is near 15%: not tested here).
    assert _kinds(records[:-1], rising_evals=3, gap_threshold=0.5) == []


def test_rising_validation_with_flat_training_is_not_called_overfitting() -> None:
    records = [train(s, 2.0 + (0.05 if s % 20 else -0.05)) for s in range(10, 1001, 10)]
    records += [val(s, 2.0 + s / 10_000) for s in range(200, 1001, 200)]
    assert "overfitting" not in _kinds(records)


def test_a_large_train_val_gap() -> None:
    records = _with_val(clean_curve(), {s: (1.5 + 2.0 * math.exp(-s / 800)) * 1.3 for s in range(200, 2001, 200)})
    assert _kinds(records) == ["gap"]
    assert "23% above training loss" in _warning(records, "gap").message
    assert _kinds(records, gap_threshold=0.5) == []


def test_a_flat_training_loss() -> None:
    rng = np.random.default_rng(2)
    records = [train(s, 2.0 + float(rng.normal(0, 0.002)), tokens_per_sec=1000.0) for s in range(10, 1001, 10)]
    assert _kinds(records) == ["flat"]
    assert "learning_rate" in _warning(records, "flat").recommendation


def test_a_loss_spike() -> None:
    records = clean_curve()
    spike = next(r for r in records if r["split"] == "train" and r["step"] == 1000)
    spike["loss"] += 0.5
    assert _kinds(records) == ["spiky"]
    warning = _warning(records, "spiky")
    assert "1 sudden rise" in warning.message and "step 1,000" in warning.message
    assert "max_grad_norm" in warning.recommendation and "warmup_steps" in warning.recommendation


def test_nan_and_divergence() -> None:
    records = [r for r in clean_curve() if r["step"] <= 500] + [train(510, float("nan"))]
    assert _kinds(records) == ["nan"]
    assert "NaN or inf at step 510" in _warning(records, "nan").message
    diverging = [train(s, 2.0 - s / 1000 if s <= 1000 else 1.0 + (s - 1000) / 500) for s in range(10, 2001, 10)]
    assert _kinds(diverging) == ["nan"] and "diverging" in _warning(diverging, "nan").message
    failed = RunStatus(state="failed", error="training loss became nan at step 7")
    assert _kinds([], failed) == ["nan"]


def test_a_throughput_slowdown() -> None:
    records = clean_curve()
    for r in records[-25:]:
        if r["split"] == "train":
            r["tokens_per_sec"] = 600.0
    assert _kinds(records) == ["slowdown"]
    assert "fell 40%" in _warning(records, "slowdown").message
    assert _kinds(records, slowdown_drop=0.5) == []


# ---- checkpoints -----------------------------------------------------------------------------------


def test_top_checkpoints_ranked_by_their_validation_loss(tmp_path: Path) -> None:
    records = [val(0, 4.0), val(100, 2.0), val(200, 1.5), val(250, 1.0), val(300, 1.7)]
    write_run(tmp_path, records, checkpoints=(100, 200, 300, 400))
    runs.checkpoint_dir(tmp_path, 250).mkdir()  # incomplete (no trainer_state.json): not offered
    top = dashboard.top_checkpoints(tmp_path, dashboard.read_records(tmp_path))
    assert [(c.step, c.val_loss) for c in top] == [(200, 1.5), (300, 1.7), (100, 2.0)]
    assert top[0].path == runs.checkpoint_dir(tmp_path, 200) and top[0].path.is_dir()
    assert [c.step for c in dashboard.top_checkpoints(tmp_path, [], n=3)] == []


# ---- comparing runs --------------------------------------------------------------------------------


def _two_runs(parent: Path) -> tuple[Path, Path]:
    base = {"model": "tiny", "learning_rate": 0.001, "lora_parameters": {"rank": 8, "dropout": 0.0}, "seed": 0}
    a = write_run(
        parent / "run-a",
        clean_curve(),
        status=RunStatus(state="completed", step=2000, total_steps=2000),
        config={**base, "run_name": "run-a"},
    )
    other = {**base, "learning_rate": 0.0002, "lora_parameters": {"rank": 16, "dropout": 0.0}, "run_name": "run-b"}
    del other["seed"]
    slower = [{**r, "tokens_per_sec": 500.0} if r["split"] == "train" else r for r in clean_curve(1000, seed=3)]
    b = write_run(
        parent / "run-b", slower, status=RunStatus(state="stopped", step=1000, total_steps=2000), config=other
    )
    return a, b


def test_compare_runs(tmp_path: Path) -> None:
    a, b = _two_runs(tmp_path)
    comparison = dashboard.compare_runs([a, b])
    assert comparison.config_headers == ["key", "run-a", "run-b"]
    assert comparison.config_rows == [
        ["learning_rate", "0.001", "0.0002"],
        ["lora_parameters.rank", "8", "16"],
        ["seed", "0", dashboard.ABSENT],
    ]
    rows = comparison.summary_rows()
    best_a = 1.5 + 2.0 * math.exp(-2000 / 800) + 0.01
    assert rows[0][:4] == ["run-a", "completed", f"{best_a:.4f}", "2,000"]
    assert rows[1][1] == "stopped" and rows[1][5] == "500" and rows[1][6] == "8m 20s" and rows[1][7] == "1,000 / 2,000"
    assert [t.name for t in comparison.loss.data] == ["run-a", "run-b"]
    assert [t.name for t in comparison.perplexity.data] == ["run-a", "run-b"]
    np.testing.assert_allclose(list(comparison.perplexity.data[0].y), np.exp(list(comparison.loss.data[0].y)))
    assert "learning_rate" in comparison.to_text() and "0.0002" in comparison.to_text()


def test_compare_runs_without_config_or_metrics(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    runs.write_status(empty, RunStatus(state="failed"))
    a, _ = _two_runs(tmp_path)
    comparison = dashboard.compare_runs([a, empty])
    assert comparison.summary_rows()[1] == ["empty", "failed", "-", "-", "-", "-", "-", "0"]
    assert ["model", "tiny", dashboard.ABSENT] in comparison.config_rows


# ---- CLI -------------------------------------------------------------------------------------------


def test_cli_runs_json_and_compare(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a, b = _two_runs(home / "runs")
    env = {"FORGELLM_HOME": str(home)}
    status = runs.read_status(a)
    status.update(best_step=2000, best_val_loss=1.6, started_at="2026-01-02T03:04:05+00:00")
    runs.write_status(a, status)

    listed = json.loads(run_cli("runs", "--json", env=env).stdout)
    by_name = {run["name"]: run for run in listed}
    assert by_name["run-a"] == {
        "name": "run-a",
        "path": str(a.resolve()),
        "state": "completed",
        "step": 2000,
        "total_steps": 2000,
        "best_val_loss": 1.6,
        "best_step": 2000,
        "started_at": "2026-01-02T03:04:05+00:00",
    }
    assert by_name["run-b"]["state"] == "stopped" and by_name["run-b"]["best_val_loss"] is None
    assert "run-a" in run_cli("runs", env=env).stdout  # the text listing is still there

    text = run_cli("compare", "run-a", str(b), env=env).stdout  # a name under runs/, and a path
    assert "best val loss" in text and "config differences" in text
    assert any(line.split()[:3] == ["learning_rate", "0.001", "0.0002"] for line in text.splitlines())
    as_json = json.loads(run_cli("compare", "run-a", "run-b", "--json", env=env).stdout)
    assert [r["name"] for r in as_json["runs"]] == ["run-a", "run-b"]
    assert ["lora_parameters.rank", "8", "16"] in as_json["config_diff"]["rows"]

    one = run_cli("compare", "run-a", env=env, check=False)
    assert one.returncode == 2 and "at least two runs" in one.stderr
    missing = run_cli("compare", "run-a", "nope", env=env, check=False)
    assert missing.returncode == 2 and "no run folder named 'nope'" in missing.stderr

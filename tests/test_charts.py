"""Chart functions: figures built from synthetic metric records have the right traces and points."""

from __future__ import annotations

import math

from forgellm import charts, runs
from forgellm.runs import record_from_dict


def _records(train_steps: int, every: int = 1, val_every: int = 50) -> list[dict]:
    """Metric records like a run's metrics.jsonl: train every `every` steps, val every `val_every` (and at 0)."""
    out = []
    for step in range(0, train_steps + 1):
        if step and step % every == 0:
            out.append(
                {
                    "step": step,
                    "split": "train",
                    "loss": 5 - step / train_steps,
                    "lr": 1e-3 * (1 - step / train_steps),
                    "tokens_per_sec": 1000.0 + step,
                }
            )
        if step % val_every == 0:
            # Falls until step 100, then rises (overfitting): the best validation point is at step 100.
            out.append({"step": step, "split": "val", "loss": 6.0 if step == 0 else 4.0 + abs(step - 100) / 1000})
    return _typed(out)


def _typed(dicts: list[dict]) -> list:
    """Metric records as `runs.read_metrics` returns them."""
    return [record_from_dict(d) for d in dicts]


def _trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_loss_figure_has_train_val_and_best_point():
    fig = charts.loss_figure(_records(200))
    assert [t.name for t in fig.data] == ["train", "validation", "best validation"]
    assert len(_trace(fig, "train").x) == 200
    val = _trace(fig, "validation")
    assert list(val.x) == [0, 50, 100, 150, 200] and "markers" in val.mode
    best = _trace(fig, "best validation")
    assert list(best.x) == [100] and math.isclose(best.y[0], 4.0)


def test_best_point_ignores_the_baseline():
    # Step 0 is the untrained model: never a checkpoint, so never "best" even when it is lowest.
    fig = charts.loss_figure(_typed([{"step": 0, "split": "val", "loss": 3.0}]))
    assert [t.name for t in fig.data] == ["validation"]
    records = _typed([{"step": 0, "split": "val", "loss": 3.0}, {"step": 10, "split": "val", "loss": 3.5}])
    assert charts.best_validation(records) == (10, 3.5)


def test_long_runs_are_downsampled_keeping_first_and_last():
    records = _records(50_000, val_every=5_000)
    fig = charts.loss_figure(records)
    train = _trace(fig, "train")
    assert len(train.x) == charts.MAX_POINTS
    assert train.x[0] == 1 and train.x[-1] == 50_000
    assert len(fig.to_json()) < 300_000  # re-sent every refresh: must stay small


def test_downsample():
    points = list(range(10_001))
    out = charts.downsample(points, 100)
    assert len(out) == 100 and out[0] == 0 and out[-1] == 10_000 and out == sorted(out)
    assert charts.downsample([1, 2, 3], 100) == [1, 2, 3]


def test_non_finite_and_repeated_steps():
    records = _typed(
        [
            {"step": 1, "split": "train", "loss": 2.0},
            {"step": 2, "split": "train", "loss": float("nan")},
            {"step": 3, "split": "train", "loss": float("inf")},
            {"step": 1, "split": "train", "loss": 1.5},  # a resumed run logs step 1 again: the later one wins
        ]
    )
    train = _trace(charts.loss_figure(records), "train")
    assert list(train.x) == [1] and list(train.y) == [1.5]


def test_empty_records_give_a_placeholder():
    for fig in (charts.loss_figure([]), charts.throughput_memory_figure([])):
        assert len(fig.data) == 0 and fig.layout.annotations


def test_throughput_figure_puts_memory_on_second_axis_and_lr_has_its_own():
    records = [
        runs.TrainRecord(step=s, loss=1.0, lr=1e-3, tokens_per_sec=900.0, peak_memory_gb=0.5) for s in range(1, 101)
    ]
    fig = charts.throughput_memory_figure(records)
    tps, memory = _trace(fig, "tokens/s"), _trace(fig, "peak memory (GB)")
    assert len(tps.x) == len(memory.x) == 100
    assert memory.yaxis == "y2" and fig.layout.yaxis2.overlaying == "y"
    assert len(_trace(charts.learning_rate_figure(records), "learning rate").x) == 100


def test_length_histogram():
    fig = charts.length_histogram_figure([1, 2, 4, 8, 16], [3, 0, 5, 1])
    (bars,) = fig.data
    assert list(bars.x) == ["1", "2-3", "4-7", "8-15"] and list(bars.y) == [3, 0, 5, 1]
    assert len(charts.length_histogram_figure([], []).data) == 0
    assert len(charts.length_histogram_figure([1, 2], [1, 2]).data) == 0  # mismatched: no bogus bars

"""Run folders written by hand, as a trainer leaves them (imported as `from fake_runs import ...`).

The dashboard, report and compare tests need runs with known curves; training real ones would take
minutes and could not produce a chosen overfitting or slowdown on demand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml

from forgellm import runs
from forgellm.metric_columns import ColumnBuilder, MetricColumns
from forgellm.metrics_reader import parse_metric_rows


def train(step: int, loss: float, **fields: float) -> dict:
    return {"step": step, "split": "train", "loss": loss, **fields}


def val(step: int, loss: float, **fields: float) -> dict:
    return {"step": step, "split": "val", "loss": loss, "ppl": math.exp(min(loss, 50.0)), **fields}


def clean_curve(steps: int = 2000, every: int = 10, val_every: int = 200, seed: int = 0) -> list[dict]:
    """A healthy run: training loss decaying towards 1.5 with a little noise, validation 0.01 above it,
    steady tokens/s. Train reports every `every` steps, validation at 0 and every `val_every`."""
    rng = np.random.default_rng(seed)
    records = [val(0, 4.0)]
    for step in range(every, steps + 1, every):
        clean = 1.5 + 2.0 * math.exp(-step / 800)
        records.append(
            train(
                step,
                clean + float(rng.normal(0, 0.01)),
                lr=1e-3,
                tokens_per_sec=1000.0 + float(rng.normal(0, 5)),
                trained_tokens=step * 512,
                peak_memory_gb=1.25,
                epoch=step / 1000,
                elapsed_s=step * 0.5,
            )
        )
        if step % val_every == 0:
            records.append(val(step, clean + 0.01, elapsed_s=step * 0.5))
    return records


def metrics_text(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_run(
    run_dir: Path,
    records: list[dict],
    status: runs.RunStatus | None = None,
    config: dict | None = None,
    checkpoints: tuple[int, ...] = (),
) -> Path:
    """A run folder holding metrics.jsonl, and status.json, config.yaml and complete checkpoints when given."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runs.METRICS_FILE).write_text(metrics_text(records))
    if status is not None:
        runs.write_status(run_dir, status)
    if config is not None:
        (run_dir / runs.CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    for step in checkpoints:
        folder = runs.checkpoint_dir(run_dir, step)
        folder.mkdir(parents=True)
        (folder / runs.TRAINER_STATE_FILE).write_text(json.dumps({"step": step}))
    return run_dir


def full_read(run_dir: Path) -> MetricColumns:
    """The columns of every whole line, parsed: what a reader without a column file builds."""
    data = (run_dir / runs.METRICS_FILE).read_bytes()
    builder = ColumnBuilder()
    builder.extend_rows(parse_metric_rows(data[: data.rfind(b"\n") + 1]))
    return builder.snapshot()


def assert_same_columns(got: MetricColumns, expected: MetricColumns) -> None:
    for split in ("train", "val"):
        a, b = getattr(got, split), getattr(expected, split)
        np.testing.assert_array_equal(a.step, b.step)
        assert set(a.values) == set(b.values)
        for name in a.values:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{split}.{name}")  # NaN equals NaN here

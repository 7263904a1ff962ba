"""Data-parallel training through mlx.launch (ring backend, 2 ranks on 127.0.0.1) follows the same loss
curve as one process at the same global batch; only rank 0 writes the run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

from forgellm import runs

SMALL = ["iters=3", "max_seq_length=64", "batch_size=4", "steps_per_report=1", "steps_per_eval=3", "warmup_steps=1"]


def train(out: Path, name: str, *extra: str) -> Path:
    args = ["train", "configs/cpt-tiny.yaml"]
    for item in [*SMALL, f"output_dir={out}", f"run_name={name}", *extra]:
        args += ["--set", item]
    proc = run_cli(*args, timeout=400)
    return Path(proc.stdout.splitlines()[0])


def test_two_ranks_match_one(tiny_model: Path, tmp_path: Path) -> None:
    single = train(tmp_path, "single")
    double = train(tmp_path, "double", "hosts=[127.0.0.1,127.0.0.1]")
    assert runs.read_status(double).state == "completed"
    one, two = runs.read_metrics(single), runs.read_metrics(double)
    assert [(r.step, r.split) for r in one] == [(r.step, r.split) for r in two]  # each report once
    for a, b in zip(one, two, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-4), (a, b)
    assert runs.checkpoint_steps(double) == [3]

"""Gradient accumulation and data parallelism give the update of one process on one batch of the same rows.

Data-parallel runs go through mlx.launch (ring backend, 2 ranks on 127.0.0.1). The loss of a step is
the mean over every trained position of the global batch, so the claim must hold for IFT with prompt
masking too, where micro-batches and ranks hold different numbers of trained positions.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from helpers import PROJECT_ROOT, run_cli

from forgellm import runs

SMALL = ["max_seq_length=64", "steps_per_report=1", "warmup_steps=1", "lora_parameters.dropout=0.0"]
IFT = ["max_seq_length=128", "val_batches=1"]


def train(out: Path, config: str, name: str, *extra: str) -> tuple[Path, str]:
    args = ["train", f"configs/{config}"]
    for item in [*SMALL, f"output_dir={out}", f"run_name={name}", *extra]:
        args += ["--set", item]
    proc = run_cli(*args, timeout=400)
    return Path(proc.stdout.splitlines()[0]), proc.stdout


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r.step, r.loss) for r in runs.read_metrics(run_dir) if r.split == "train"]


def adapter_weights(run_dir: Path) -> dict[str, mx.array]:
    return mx.load(str(runs.checkpoint_dir(run_dir, runs.checkpoint_steps(run_dir)[-1]) / runs.ADAPTER_FILE))


def assert_same_training(one: Path, other: Path) -> None:
    a, b = train_losses(one), train_losses(other)
    assert [s for s, _ in a] == [s for s, _ in b] and a, (a, b)  # each report once, none missing
    for (step, x), (_, y) in zip(a, b, strict=True):
        assert y == pytest.approx(x, rel=1e-4), (step, x, y)
    wa, wb = adapter_weights(one), adapter_weights(other)
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        np.testing.assert_allclose(np.array(wb[key]), np.array(wa[key]), rtol=1e-3, atol=2e-6, err_msg=key)


@contextlib.contextmanager
def holding_ports(*ports: int) -> Iterator[None]:
    """Listen on `ports` (those something else holds already stay held by it)."""
    held = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError:
            sock.close()
    try:
        yield
    finally:
        for sock in held:
            sock.close()


def positions_per_micro_batch(config: str, batch_size: int, micro_batches: int) -> list[int]:
    """Trained positions in each micro-batch of step 1, computed here from the data the trainer sees."""
    from forgellm import config as cfg_mod
    from forgellm.data import prepare
    from forgellm.models.registry import resolve_model
    from forgellm.training.batches import BatchStream
    from forgellm.training.model_setup import load_base

    cfg = cfg_mod.load(PROJECT_ROOT / "configs" / config, [*SMALL, *IFT, f"batch_size={batch_size}"])
    _, tokenizer = load_base(resolve_model(cfg.model), False)
    train_split = prepare(cfg, tokenizer).train
    stream = BatchStream(len(train_split.tokens), batch_size, cfg.seed)
    return [int(train_split.mask[stream.next(), 1:].sum()) for _ in range(micro_batches)]


def test_ift_accumulation_equals_one_batch_of_twice_the_size(tiny_model: Path, tmp_path: Path) -> None:
    # Only a real test if the two micro-batches differ in trained positions (else a mean of means is right too).
    first, second = positions_per_micro_batch("ift-tiny.yaml", 4, 2)
    assert first != second, (first, second)
    steps = ["iters=4", "steps_per_eval=4", "learning_rate=5e-3"]
    big, _ = train(tmp_path, "ift-tiny.yaml", "big", *IFT, *steps, "batch_size=8")
    accumulated, _ = train(
        tmp_path, "ift-tiny.yaml", "accum", *IFT, *steps, "batch_size=4", "grad_accumulation_steps=2"
    )
    assert_same_training(big, accumulated)


def test_ift_on_two_ranks_equals_one(tiny_model: Path, tmp_path: Path) -> None:
    steps = ["iters=3", "steps_per_eval=3", "batch_size=4", "learning_rate=5e-3"]
    single, _ = train(tmp_path, "ift-tiny.yaml", "single", *IFT, *steps)
    double, stdout = train(tmp_path, "ift-tiny.yaml", "double", *IFT, *steps, "hosts=[127.0.0.1,127.0.0.1]")
    assert runs.read_status(double).world_size == 2 and runs.read_status(single).world_size == 1
    assert_same_training(single, double)


def test_cpt_on_two_ranks_matches_one_and_only_rank_0_writes(tiny_model: Path, tmp_path: Path) -> None:
    steps = ["iters=3", "batch_size=4", "steps_per_eval=3"]
    single, _ = train(tmp_path, "cpt-tiny.yaml", "single", *steps, "fine_tune_type=full")
    with holding_ports(32323, 32324):  # mlx.launch's default ring ports, as another run on this machine would
        double, stdout = train(
            tmp_path, "cpt-tiny.yaml", "double", *steps, "fine_tune_type=full", "hosts=[127.0.0.1,127.0.0.1]"
        )
    status = runs.read_status(double)
    assert status.state == "completed" and status.world_size == 2
    # Both ranks ran: each announced itself through mlx.launch's output; only rank 0 wrote train.log.
    assert "rank 0/2 ready" in stdout and "rank 1/2 ready" in stdout, stdout
    log = (double / runs.LOG_FILE).read_text()
    assert "rank 0/2 ready" in log and "rank 1/2 ready" not in log
    one, two = runs.read_metrics(single), runs.read_metrics(double)
    assert [(r.step, r.split) for r in one] == [(r.step, r.split) for r in two]  # each report once
    for a, b in zip(one, two, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-4), (a, b)
    assert runs.checkpoint_steps(double) == [3]

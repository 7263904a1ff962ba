"""Training options that change what a run does, each shown by real runs of the tiny model through the
CLI: length by `epochs`, the three optimizers, `weight_decay`, each `lr_schedule` with warmup and a floor,
`grad_checkpoint`, and `num_layers` for LoRA and full fine-tuning. Small shapes: a run takes seconds."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from test_training import train

from forgellm import runs

JOURNAL = [f"dataset/beekeeping/journal/{name}" for name in ("01_year_one_spring.txt", "02_year_one_summer.txt")]
QUIET = ["steps_per_eval=100000", "val_batches=1"]  # validation only before step 1 and after the last


def train_records(run_dir: Path) -> list[runs.TrainRecord]:
    return [r for r in runs.read_metrics(run_dir) if isinstance(r, runs.TrainRecord)]


def saved_weights(run_dir: Path, which: str = "latest") -> dict:
    """The trainable weights a checkpoint holds (for full fine-tuning: every trained weight)."""
    import mlx.core as mx

    return mx.load(str(runs.resolve_checkpoint(run_dir, which) / runs.ADAPTER_FILE))


def base_weights(tiny_model: Path) -> dict:
    import mlx.core as mx

    return mx.load(str(tiny_model / "model.safetensors"))


def max_abs_diff(a: dict, b: dict) -> float:
    import mlx.core as mx

    assert a and set(a) == set(b), (sorted(a)[:3], sorted(b)[:3])
    return max(mx.abs(a[k] - b[k]).max().item() for k in a)


def global_norm(weights: dict) -> float:
    return math.sqrt(sum((v * v).sum().item() for v in weights.values()))


def block_of(key: str) -> int | None:
    match = re.match(r"model\.layers\.(\d+)\.", key)
    return int(match.group(1)) if match else None


def num_blocks(tiny_model: Path) -> int:
    return json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]


# ---- length ------------------------------------------------------------------------------------------


def test_epochs_set_the_run_length_from_the_training_rows(tiny_model: Path, tmp_path: Path) -> None:
    """`epochs: 2.2` overrides iters: steps = ceil(2.2 x rows / batch_size), the epoch counter advances one
    batch per step, and the run ends at the first step that completes 2.2 passes."""
    epochs, batch = 2.2, 16
    data = f"data=[{', '.join(JOURNAL)}]"
    run_dir, _ = train(tmp_path, "epochs", data, f"epochs={epochs}", f"batch_size={batch}", "iters=400", *QUIET)
    rows = int(re.search(r"train rows (\d+) x", (run_dir / runs.LOG_FILE).read_text()).group(1))
    expected = math.ceil(epochs * rows / batch)
    assert expected != 400 and expected * batch / rows > epochs  # iters ignored; the last batch spills over
    status = runs.read_status(run_dir)
    assert status.state == "completed" and status.step == status.total_steps == expected
    records = train_records(run_dir)
    assert [r.step for r in records] == list(range(1, expected + 1))
    for r in records:
        assert r.epoch == pytest.approx(r.step * batch / rows, abs=1e-4), r
    assert records[-2].epoch < epochs <= records[-1].epoch and status.epoch == records[-1].epoch > 2


# ---- optimizers and weight decay ---------------------------------------------------------------------

DECAY = 5.0  # strong enough that 6 small steps shrink the weights by several percent
OPTIMIZER_RUNS = {
    "adamw": ["optimizer=adamw", "weight_decay=0"],
    "adamw_decay": ["optimizer=adamw", f"weight_decay={DECAY}"],
    "adam": ["optimizer=adam", f"weight_decay={DECAY}"],  # Adam has no weight decay (help: "AdamW or SGD")
    "sgd": ["optimizer=sgd", "weight_decay=0", "learning_rate=1.0"],  # plain SGD needs a far larger rate
}


@pytest.fixture(scope="module")
def optimizer_runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Full fine-tuning runs of 6 steps, identical but for the optimizer settings."""
    out = tmp_path_factory.mktemp("optimizers")
    common = ["fine_tune_type=full", "iters=6", "steps_per_eval=6"]
    return {name: train(out, name, *common, *extra)[0] for name, extra in OPTIMIZER_RUNS.items()}


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_each_optimizer_lowers_the_loss(optimizer_runs: dict[str, Path], name: str) -> None:
    run_dir = optimizer_runs[name]
    val = {r.step: r.loss for r in runs.read_metrics(run_dir) if r.split == "val"}
    assert sorted(val) == [0, 6] and val[6] < val[0] - 0.2, val
    losses = [r.loss for r in train_records(run_dir)]
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2]) - 0.2, losses
    assert f"optimizer: {name}" in (run_dir / runs.CONFIG_FILE).read_text()


def test_the_optimizers_move_the_weights_differently(optimizer_runs: dict[str, Path], tiny_model: Path) -> None:
    """Same data, same seed: SGD, Adam and AdamW end at different weights, and `adam` is Adam (bias
    correction like AdamW's) that does not apply weight_decay: it matches AdamW without decay exactly."""
    weights = {name: saved_weights(run) for name, run in optimizer_runs.items()}
    base = base_weights(tiny_model)
    for name, w in weights.items():
        assert max_abs_diff(w, base) > 1e-3, name  # every optimizer trained
    assert max_abs_diff(weights["sgd"], weights["adamw"]) > 1e-3
    assert max_abs_diff(weights["adam"], weights["adamw_decay"]) > 1e-4
    assert max_abs_diff(weights["adam"], weights["adamw"]) < 1e-6


def test_weight_decay_shrinks_the_weights_by_the_logged_schedule(optimizer_runs: dict[str, Path]) -> None:
    """AdamW's decoupled decay multiplies every weight by (1 - lr x weight_decay) each step, so against the
    same run without decay the weights' norm ends smaller by the product of those factors."""
    lrs = [r.lr for r in train_records(optimizer_runs["adamw_decay"])]
    assert len(lrs) == 6 and max(lrs) > 0
    expected = math.prod(1 - lr * DECAY for lr in lrs)
    assert expected < 0.97  # a shrink well beyond the tolerance below
    decayed, plain = saved_weights(optimizer_runs["adamw_decay"]), saved_weights(optimizer_runs["adamw"])
    assert global_norm(decayed) / global_norm(plain) == pytest.approx(expected, abs=2e-3)


# ---- learning-rate schedules -------------------------------------------------------------------------


def expected_lr(step: int, total: int, schedule: str, peak: float, floor: float, warmup: int) -> float:
    """The rate step `step` (1-based) trains with, from the documented schedule: after `done` = step - 1
    updates, warmup rises linearly from 0 (so step 1 trains at 0, as in mlx-lm and Hugging Face) to
    the peak at step warmup + 1; the decay then reaches min_learning_rate exactly at the last step."""
    done = step - 1
    if done < warmup:
        return peak * done / warmup
    if schedule == "constant":
        return peak
    progress = (done - warmup) / (total - warmup - 1)
    if schedule == "linear":
        return peak + (floor - peak) * progress
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize(
    ("schedule", "warmup"), [("cosine", 3), ("linear", 3), ("constant", 3), ("cosine", 0)], ids=str
)
def test_the_logged_learning_rate_follows_the_schedule(
    tiny_model: Path, tmp_path: Path, schedule: str, warmup: int
) -> None:
    total, peak, floor = 10, 3e-3, 1e-4
    run_dir, _ = train(
        tmp_path,
        "lr",
        f"lr_schedule={schedule}",
        f"warmup_steps={warmup}",
        f"learning_rate={peak}",
        f"min_learning_rate={floor}",
        f"iters={total}",
        *QUIET,
    )
    logged = {r.step: r.lr for r in train_records(run_dir)}
    assert sorted(logged) == list(range(1, total + 1))
    expected = {k: expected_lr(k, total, schedule, peak, floor, warmup) for k in logged}
    assert logged == pytest.approx(expected, rel=1e-5, abs=1e-10)
    # The same, spelled out: where warmup starts and ends, and where the decay ends.
    assert logged[1] == (0.0 if warmup else pytest.approx(peak, rel=1e-6))
    assert logged[warmup + 1] == pytest.approx(peak, rel=1e-6) == max(logged.values())
    assert logged[total] == pytest.approx(peak if schedule == "constant" else floor, rel=1e-5)


# ---- memory --------------------------------------------------------------------------------------------


def test_grad_checkpoint_gives_the_same_losses_with_less_peak_memory(tiny_model: Path, tmp_path: Path) -> None:
    """Recomputing activations in the backward pass changes no number, only memory. A larger batch
    (16 x 128 tokens) than elsewhere, so activations, not weights, dominate the peak."""
    shape = ["batch_size=16", "max_seq_length=128", "iters=3", "warmup_steps=0", *QUIET]
    plain, _ = train(tmp_path, "plain", *shape)
    recomputed, _ = train(tmp_path, "recomputed", *shape, "grad_checkpoint=true")
    a, b = train_records(plain), train_records(recomputed)
    assert [r.step for r in a] == [r.step for r in b] == [1, 2, 3]
    assert [r.loss for r in b] == pytest.approx([r.loss for r in a], rel=1e-5)
    assert max_abs_diff(saved_weights(recomputed), saved_weights(plain)) < 1e-5  # the same gradients
    peak_plain, peak_recomputed = max(r.peak_memory_gb for r in a), max(r.peak_memory_gb for r in b)
    assert peak_recomputed < 0.85 * peak_plain, (peak_recomputed, peak_plain)


# ---- num_layers ----------------------------------------------------------------------------------------


def test_lora_num_layers_adapts_only_the_last_blocks(tiny_model: Path, tmp_path: Path) -> None:
    """num_layers: 2 puts trained adapters on every linear layer of the last two blocks and nowhere else:
    loaded as mlx-lm loads it, the earlier blocks are the base model's plain layers and weights."""
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.lora import LoRALinear
    from mlx_lm.utils import load

    run_dir, _ = train(
        tmp_path, "lora2", "fine_tune_type=lora", "num_layers=2", "iters=4", "learning_rate=5e-3", *QUIET
    )
    n = num_blocks(tiny_model)
    adapted_blocks = set(range(n - 2, n))
    saved = saved_weights(run_dir)
    assert {block_of(k) for k in saved} == adapted_blocks
    assert {k.rsplit(".", 1)[-1] for k in saved} == {"lora_a", "lora_b"}
    assert all(saved[k].abs().max().item() > 0 for k in saved if k.endswith("lora_b"))  # B starts at 0: trained

    checkpoint = runs.resolve_checkpoint(run_dir, "latest")
    adapted, _ = load(str(tiny_model), adapter_path=str(checkpoint))
    base, _ = load(str(tiny_model))
    for i, (layer, base_layer) in enumerate(zip(adapted.layers, base.layers, strict=True)):
        loras = [name for name, m in layer.named_modules() if isinstance(m, LoRALinear)]
        linears = [name for name, m in base_layer.named_modules() if type(m).__name__ == "Linear"]
        if i in adapted_blocks:
            assert sorted(loras) == sorted(linears) and len(linears) == 7, (i, loras)
        else:
            assert loras == [], (i, loras)
            ours, theirs = dict(tree_flatten(layer.parameters())), dict(tree_flatten(base_layer.parameters()))
            assert max_abs_diff(ours, theirs) == 0, i


def test_full_fine_tune_num_layers_trains_only_the_last_blocks(tiny_model: Path, tmp_path: Path) -> None:
    """Full fine-tuning with num_layers: 1 trains every weight of the last block and nothing else
    (not the embeddings, not the final norm, not the earlier blocks)."""
    run_dir, _ = train(tmp_path, "full1", "fine_tune_type=full", "num_layers=1", "iters=3", "warmup_steps=0", *QUIET)
    last = num_blocks(tiny_model) - 1
    base = base_weights(tiny_model)
    saved = saved_weights(run_dir)
    assert set(saved) == {k for k in base if block_of(k) == last}
    for key, value in saved.items():
        assert (value - base[key]).abs().max().item() > 0, key  # each of them trained
    trainable = sum(v.size for v in saved.values())
    assert f"trainable parameters {trainable:,} |" in (run_dir / runs.LOG_FILE).read_text()

"""QLoRA for real, small: LoRA on the built-in 4-bit tiny model (`tiny-4bit`) through the CLI, in subprocesses.

It trains with the quantized base frozen, resumes on the same loss curve, fuses both re-quantized and
de-quantized (the de-quantized fused logits equal base + adapter logits), and a CPU run says before
step one that the float32 build trains far faster. MLX's CPU quantized kernels are slow, so the runs
are a few steps of 4 x 64 tokens.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli

from forgellm import runs
from forgellm.models import quantization

QLORA = [
    "model=tiny-4bit",
    "fine_tune_type=lora",
    "lora_parameters.dropout=0.1",  # exercises the restored random state on resume
    "max_seq_length=64",
    "batch_size=4",
    "learning_rate=1e-2",
    "warmup_steps=1",
    "iters=6",
    "steps_per_report=1",
    "steps_per_eval=6",  # validation at 0 and 6 only
    "val_batches=2",
    "save_every=100",  # checkpoints: the stop and the end
]
PROMPT = "The queen lays eggs in the brood nest of the hive."
# De-quantized fused weights are dequant(W) + B·A in float32, the adapted model computes quantized_matmul(x, W)
# + x·A·B: they agree to float32 rounding (measured 4e-7), far below what six steps changed (measured 2.3).
FUSE_ATOL = 1e-4
TRAINED_MARGIN = 0.1


def train(out: Path, name: str, env: dict | None = None) -> tuple[Path, subprocess.CompletedProcess]:
    args = ["train", "configs/cpt-tiny.yaml"]
    for item in [*QLORA, f"output_dir={out}", f"run_name={name}"]:
        args += ["--set", item]
    proc = run_cli(*args, env=env)
    return Path(proc.stdout.splitlines()[0]), proc


def losses(run_dir: Path, split: str) -> dict[int, float]:
    return {r.step: r.loss for r in runs.read_metrics(run_dir) if r.split == split}


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    return train(tmp_path_factory.mktemp("qlora_runs"), "straight")


def test_the_4bit_tiny_model_is_quantized_and_loads(qlora_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    import mlx.nn as nn
    from mlx_lm.utils import load

    from forgellm.models.registry import builtin_path

    folder = builtin_path("tiny-4bit")
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": 4, "mode": "affine"}
    model, _ = load(str(folder))
    kinds = {type(m) for _, m in model.named_modules()}
    assert nn.QuantizedLinear in kinds and nn.QuantizedEmbedding in kinds and nn.Linear not in kinds


def test_qlora_trains_and_checkpoints(qlora_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, _ = qlora_run
    status = runs.read_status(run_dir)
    assert status.state == "completed" and status.step == 6
    val, train_losses = losses(run_dir, "val"), losses(run_dir, "train")
    assert val[6] < val[0] - 0.05, val  # the adapter learned
    assert train_losses[6] < train_losses[1], train_losses
    checkpoint = runs.resolve_checkpoint(run_dir, "best")
    assert checkpoint.name == "6"
    import mlx.core as mx

    saved = mx.load(str(checkpoint / "adapters.safetensors"))
    assert saved and all(k.endswith((".lora_a", ".lora_b")) for k in saved), sorted(saved)  # the base stayed frozen
    assert json.loads((checkpoint / "adapter_config.json").read_text())["base_model"] == "tiny-4bit"


def test_the_cli_warns_that_a_cpu_trains_a_quantized_base_slowly(
    qlora_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    run_dir, proc = qlora_run
    if not quantization.mlx_runs_on_cpu():  # Metal or CUDA: QLoRA is the fast path there, nothing to say
        assert "is a quantized base" not in proc.stderr
        return
    for text in (proc.stderr, (run_dir / "train.log").read_text()):
        assert "warning: tiny-4bit is a quantized base" in text and "`model: tiny`" in text, text[-2000:]
    assert proc.stderr.count("is a quantized base") == 1


def test_the_warning_is_only_for_a_quantized_base_on_a_cpu(tmp_path: Path) -> None:
    assert quantization.quantized_cpu_warning("tiny") is None  # float32
    assert quantization.quantized_cpu_warning("tiny-4bit", on_cpu=False) is None  # Metal or CUDA
    warning = quantization.quantized_cpu_warning("smollm2-135m-instruct-4bit", on_cpu=True)
    assert warning and "measured" in warning and "`model: smollm2-135m-instruct`" in warning
    folder = tmp_path / "hf-4bit"  # a folder quantized elsewhere (transformers writes quantization_config)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {"bits": 4}}))
    warning = quantization.quantized_cpu_warning(str(folder), on_cpu=True)
    assert warning and "float32 (non-quantized) version of this model" in warning
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert quantization.quantized_cpu_warning(str(folder), on_cpu=True) is None


def test_building_a_model_leaves_the_random_stream_alone(tmp_path: Path) -> None:
    """Regression: the trainer seeds, then builds a built-in model on first use. The build reseeded MLX's
    global random stream, so a run that built tiny-4bit drew other LoRA weights and dropout masks than
    the same run with it built (its resume did not continue the straight run's curve)."""
    import mlx.core as mx

    from forgellm.models.tiny import build_tiny, build_tiny_quantized

    mx.random.seed(3)
    build_tiny_quantized(tmp_path / "tiny-4bit", build_tiny(tmp_path / "tiny"))
    after_build = mx.random.uniform(shape=(4,))
    mx.random.seed(3)
    assert mx.array_equal(after_build, mx.random.uniform(shape=(4,))).item()


def test_the_training_tab_shows_the_warning_with_the_start_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from forgellm import choices, forms
    from forgellm.config import TrainConfig
    from forgellm.ui import training

    def fake_start(cfg: TrainConfig) -> SimpleNamespace:
        return SimpleNamespace(run_dir=training.launcher.create_run(cfg), process=SimpleNamespace(pid=1))

    monkeypatch.setattr(training.launcher, "start_in_background", fake_start)
    monkeypatch.setattr(quantization, "mlx_runs_on_cpu", lambda: True)
    for model, warned in (("tiny-4bit", True), ("tiny", False)):
        values = dict(zip(forms.FORM_KEYS, forms.form_values(TrainConfig(model=model)), strict=True))
        message, _ = training._start(choices.DEFAULTS_CHOICE, *values.values())
        assert message.startswith("Started") and ("**Warning:** tiny-4bit is a quantized base" in message) == warned


def test_qlora_resume_continues_the_same_loss_curve(
    qlora_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    # The straight run (first in the session) built tiny-4bit inside its trainer; this one finds it built.
    straight, _ = qlora_run
    interrupted, _ = train(tmp_path, "interrupted", env={"FORGELLM_STOP_AT_STEP": "3"})
    assert runs.read_status(interrupted).state == "stopped"
    assert runs.checkpoint_steps(interrupted) == [3]
    run_cli("train", "--resume", str(interrupted))

    expected, resumed = losses(straight, "train"), losses(interrupted, "train")
    assert sorted(resumed) == list(range(1, 7))
    for step in range(4, 7):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), step
    assert losses(interrupted, "val") == pytest.approx(losses(straight, "val"), rel=1e-4)
    assert runs.read_status(interrupted).state == "completed"


def test_qlora_fuses_requantized_and_dequantized(
    qlora_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import load

    run_dir, _ = qlora_run
    kept, dequantized = tmp_path / "fused-4bit", tmp_path / "fused-float"
    run_cli("fuse", str(run_dir), "--out", str(kept))
    run_cli("fuse", str(run_dir), "--out", str(dequantized), "--dequantize")
    assert "quantization" in json.loads((kept / "config.json").read_text())
    config = json.loads((dequantized / "config.json").read_text())
    assert not quantization.config_is_quantized(config), config

    checkpoint = runs.resolve_checkpoint(run_dir, "best")
    base_path = json.loads((checkpoint / "adapter_config.json").read_text())["model"]
    base, tokenizer = load(base_path)
    adapted, _ = load(base_path, adapter_path=str(checkpoint))
    fused_q, _ = load(str(kept))
    fused, _ = load(str(dequantized))
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in fused_q.named_modules())
    assert not any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in fused.named_modules())

    tokens = mx.array([tokenizer.encode(PROMPT)])
    a, f, b, q = adapted(tokens), fused(tokens), base(tokens), fused_q(tokens)
    assert mx.abs(a - f).max().item() < FUSE_ATOL, mx.abs(a - f).max().item()
    assert mx.abs(a - b).max().item() > TRAINED_MARGIN, mx.abs(a - b).max().item()  # a no-op adapter fails here
    # Re-quantizing the fused weights rounds them again, so single logits can move by as much as the
    # adapter did; on average the re-quantized model stays far nearer the adapted one than the base is.
    requant_error, adapter_effect = mx.abs(a - q).mean().item(), mx.abs(a - b).mean().item()
    assert requant_error < 0.25 * adapter_effect, (requant_error, adapter_effect)

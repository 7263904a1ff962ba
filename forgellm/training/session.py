"""One trainer process: claim the run folder, tee output to train.log, train, record the outcome."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from .. import runs
from ..atomic import write_text
from ..config import TrainConfig, dump_yaml
from ..errors import ForgeError
from ..paths import PROJECT_ROOT, home
from ..process import process_start_time


def start_run_dir(cfg: TrainConfig) -> Path:
    """The folder a new run writes to: `output_dir/run_name`; an existing run there is never overwritten."""
    parent = Path(cfg.output_dir)
    parent = parent if parent.is_absolute() else home() / parent
    run_dir = parent / (cfg.run_name or runs.new_run_name(cfg.train_type, cfg.model))
    claimed = runs.read_status(run_dir).get("pid")
    ours = claimed == os.getpid() or is_distributed_rank()  # the app or mlx.launch prepared it for us
    if (run_dir / runs.STATUS_FILE).exists() and not ours:
        raise ForgeError(
            "a run already exists in this folder",
            str(run_dir),
            f"continue it with `python -m forgellm train --resume {run_dir}` or choose another run_name",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class _Tee:
    """Copies what the trainer prints into train.log as well (unless stdout already is train.log)."""

    def __init__(self, stream: TextIO, log: TextIO):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def _stdout_is(path: Path) -> bool:
    try:
        out, target = os.fstat(sys.stdout.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino) == (target.st_dev, target.st_ino)


def _tee_output(run_dir: Path) -> None:
    log_path = run_dir / runs.LOG_FILE
    log_path.touch()
    if _stdout_is(log_path):  # launched by the app with output redirected into train.log already
        return
    log = open(log_path, "a", encoding="utf-8", buffering=1)
    sys.stdout = _Tee(sys.stdout, log)
    sys.stderr = _Tee(sys.stderr, log)


def is_distributed_rank() -> bool:
    """True inside a process started by mlx.launch (it sets MLX_RANK for every rank)."""
    return "MLX_RANK" in os.environ


def is_main_rank() -> bool:
    return os.environ.get("MLX_RANK", "0") == "0"


def launch_argv(cfg: TrainConfig, run_dir: Path, resume: bool) -> list[str]:
    """mlx.launch command that starts one trainer per host entry, all writing to `run_dir` (rank 0 only)."""
    launcher = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"]
    argv = [*launcher, "--backend", cfg.distributed_backend, "--python", sys.executable, "--cwd", str(PROJECT_ROOT)]
    argv += ["--hostfile", cfg.hostfile] if cfg.hostfile else ["--hosts", ",".join(cfg.hosts or [])]
    for name in ("FORGELLM_HOME", "FORGELLM_BLAS", "FORGELLM_STOP_AT_STEP"):  # remote ranks see the same settings
        if name in os.environ:
            argv += ["--env", f"{name}={os.environ[name]}"]
    child = ["-m", "forgellm", "train"]
    if resume:
        child += ["--resume", str(run_dir)]
    else:
        config_file = run_dir / runs.CONFIG_FILE
        write_text(config_file, dump_yaml(cfg))
        child += [str(config_file), "--set", f"output_dir={run_dir.parent}", "--set", f"run_name={run_dir.name}"]
    return [*argv, "--", *child]


def run_distributed(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> int:
    """Run the same training data-parallel on `cfg.hosts` through MLX's own launcher and wait for it."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.call(launch_argv(cfg, run_dir, resume), env=env)


def run_training(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> int:
    """Train in this process; returns the exit code (0 for completed, early_stopped or stopped).

    With `hosts` or `hostfile` set, this process only launches the ranks (see `run_distributed`).
    """
    from ..models.registry import resolve_model
    from .loop import Trainer, fail

    run_dir = Path(run_dir)
    if (cfg.hosts or cfg.hostfile) and not is_distributed_rank():
        return run_distributed(cfg, run_dir, resume)
    if not is_main_rank():  # other ranks train silently; rank 0 owns the run folder
        trainer = Trainer(cfg, runs.RunWriter(run_dir, read_only=True), resolve_model(cfg.model), resume=resume)
        trainer.setup()
        return 0 if trainer.run() in runs.FINISHED_OK else 1
    _tee_output(run_dir)
    write_text(run_dir / runs.CONFIG_FILE, dump_yaml(cfg))
    previous = runs.read_status(run_dir) if resume else {}
    writer = runs.RunWriter(run_dir, previous)
    writer.set_status(
        state="running",
        pid=os.getpid(),
        pid_start=process_start_time(os.getpid()),
        step=previous.get("step", 0),
        total_steps=previous.get("total_steps"),
        started_at=previous.get("started_at") or runs.now_iso(),
        ended_at=None,
        error=None,
        model=cfg.model,
        train_type=cfg.train_type,
        fine_tune_type=cfg.fine_tune_type,
    )
    try:
        trainer = Trainer(cfg, writer, resolve_model(cfg.model), resume=resume)
        trainer.setup()
        state = trainer.run()
    except (Exception, KeyboardInterrupt) as e:  # any failure is recorded in the run folder, then reported
        fail(run_dir, e)
        return 1
    return 0 if state in runs.FINISHED_OK else 1

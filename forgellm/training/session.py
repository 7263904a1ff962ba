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
from ..paths import home
from ..process import process_start_time


def start_run_dir(cfg: TrainConfig) -> Path:
    """The folder a new run writes to: `output_dir/run_name`; an existing run there is never overwritten."""
    parent = Path(cfg.output_dir)
    parent = parent if parent.is_absolute() else home() / parent
    run_dir = parent / (cfg.run_name or runs.new_run_name(cfg.train_type, cfg.model))
    if (run_dir / runs.STATUS_FILE).exists():
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


def run_training(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> int:
    """Train in this process; returns the exit code (0 for completed, early_stopped or stopped)."""
    from ..models.registry import resolve_model
    from .loop import Trainer, fail

    run_dir = Path(run_dir)
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

"""One trainer process on one run folder: claim it, tee output to train.log, train, record the outcome.

The folder was made by `forgellm.launcher.create_run` (config.yaml inside); this module never
creates run folders. With `hosts`/`hostfile` the first process only starts the ranks through
`mlx.launch`, each running the same `python -m forgellm train` on the same folder.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from .. import launcher, procs, runs
from ..atomic import write_text
from ..config import TrainConfig, dump_yaml
from ..errors import ForgeError
from ..paths import PROJECT_ROOT
from .stopping import StopRequested


class _Tee:
    """Copies what the trainer prints into train.log as well (unless stdout already is train.log).

    When the reader of the stream goes away (`forgellm train CONFIG | head -1`, which the README's "prints
    the run folder first" invites), training goes on with its output in train.log alone.
    """

    def __init__(self, stream: TextIO, log: TextIO):
        self.stream: TextIO | None = stream
        self.log = log

    def write(self, text: str) -> int:
        self.log.write(text)
        self._to_stream(lambda stream: stream.write(text))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self._to_stream(lambda stream: stream.flush())

    def isatty(self) -> bool:
        return self.stream is not None and self.stream.isatty()

    def _to_stream(self, action) -> None:
        if self.stream is None:
            return
        try:
            action(self.stream)
        except BrokenPipeError:
            # Point the descriptor at /dev/null: what the stream still buffers, flushed at exit, would
            # otherwise raise again there.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
            self.stream = None


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
    log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open for the process's life
    sys.stdout = _Tee(sys.stdout, log)
    sys.stderr = _Tee(sys.stderr, log)


def is_distributed_rank() -> bool:
    """True inside a process started by mlx.launch (it sets MLX_RANK for every rank)."""
    return "MLX_RANK" in os.environ


def is_main_rank() -> bool:
    return os.environ.get("MLX_RANK", "0") == "0"


def free_port_block(count: int, tries: int = 64) -> int:
    """First of `count` consecutive TCP ports free on this machine right now.

    mlx.launch otherwise listens on fixed ports (32323 up for the ring), so two
    distributed runs on one machine, or two test sessions, would collide. Taken below Linux's
    ephemeral range, where outgoing connections do not grab them. Remote hosts' ports cannot be
    checked from here; a random block makes a clash there unlikely too.
    """
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(20000, 32000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise ForgeError(f"found no {count} consecutive free TCP ports for the ranks", "hosts", "free some ports")


def _ring_port_count(cfg: TrainConfig) -> int:
    """Ports the ring backend takes: one per host entry and address (the hostfile lists the addresses)."""
    if cfg.hosts:
        return len(cfg.hosts)
    try:
        entries = json.loads(Path(cfg.hostfile).read_text())
        return max(1, sum(len(entry.get("ips", [])) or 1 for entry in entries))
    except (OSError, ValueError, TypeError, AttributeError):
        return 64  # unreadable here: mlx.launch reports the file itself; a wide block is still free


def launch_argv(cfg: TrainConfig, run_dir: Path, resume: bool) -> list[str]:
    """mlx.launch command that starts one trainer per host entry, all on `run_dir` (rank 0 writes)."""
    launcher_cmd = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"]
    argv = [*launcher_cmd, "--backend", cfg.distributed_backend, "--python", sys.executable, "--cwd", str(PROJECT_ROOT)]
    if cfg.distributed_backend == "ring":
        argv += ["--starting-port", str(free_port_block(_ring_port_count(cfg)))]
    argv += ["--hostfile", cfg.hostfile] if cfg.hostfile else ["--hosts", ",".join(cfg.hosts or [])]
    for name in ("FORGELLM_HOME", "FORGELLM_BLAS", "FORGELLM_STOP_AT_STEP"):  # remote ranks see the same settings
        if name in os.environ:
            argv += ["--env", f"{name}={os.environ[name]}"]
    child = launcher.trainer_argv(run_dir, resume)[1:]  # without the interpreter: mlx.launch adds --python
    return [*argv, "--", *child]


def run_distributed(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> int:
    """Run the same training data-parallel on `cfg.hosts` through MLX's own launcher and wait for it.

    mlx.launch exits 0 whatever its ranks return, so the outcome is read from the run folder that
    rank 0 wrote: 0 only when this launch ended it completed, stopped or early-stopped.
    """
    before = runs.read_status(run_dir).updated_at
    code = subprocess.call(launch_argv(cfg, run_dir, resume), env=launcher.trainer_env())
    status = runs.read_status(run_dir)
    if status.updated_at == before:  # rank 0 never started writing (refused, or died at start)
        print(f"the ranks ended (mlx.launch exit code {code}) without rank 0 recording a run", file=sys.stderr)
        return 1
    return 0 if status.state in runs.FINISHED_OK else 1


def _check_fresh(run_dir: Path) -> None:
    """A fresh start needs a folder nobody has trained in (resume is the way to continue one)."""
    if (run_dir / runs.STATUS_FILE).exists() or runs.checkpoint_steps(run_dir):
        raise ForgeError(
            "this run folder has been trained before",
            str(run_dir),
            f"continue it with `python -m forgellm train --resume {run_dir}`",
        )


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> TrainConfig:
    """The config a run folder was created with (plus `overrides`, e.g. more iters on resume)."""
    from .. import config

    path = run_dir / runs.CONFIG_FILE
    if not path.is_file():
        raise ForgeError("not a run folder (no config.yaml)", str(run_dir), "pass a folder under runs/")
    return config.load(path, overrides)


def train_run(run_dir: Path, resume: bool = False, overrides: list[str] | None = None) -> int:
    """Train the run folder `run_dir` in this process (or start its ranks); returns the exit code.

    0 for completed, early_stopped or stopped; 1 when the run failed. A folder another live trainer
    holds is refused before anything is written.
    """
    run_dir = Path(run_dir).resolve()
    cfg = load_run_config(run_dir, overrides)
    if (cfg.hosts or cfg.hostfile) and not is_distributed_rank():
        launcher.require_not_running(run_dir)  # refused here, before any rank starts
        if overrides:
            write_text(run_dir / runs.CONFIG_FILE, dump_yaml(cfg))
        return run_distributed(cfg, run_dir, resume)
    if not is_main_rank():  # other ranks train silently; rank 0 owns the run folder
        return _train(cfg, runs.RunWriter(run_dir, read_only=True), resume)
    lock = launcher.claim(run_dir)
    try:
        if not resume:
            _check_fresh(run_dir)
        if overrides:
            write_text(run_dir / runs.CONFIG_FILE, dump_yaml(cfg))
        _tee_output(run_dir)
        return _train_main(cfg, run_dir, resume)
    finally:
        lock.release()


def _train_main(cfg: TrainConfig, run_dir: Path, resume: bool) -> int:
    stop = StopRequested()
    stop.install()  # before status says "running": from then on a Stop must be heard
    status = runs.read_status(run_dir) if resume else runs.RunStatus()
    writer = runs.RunWriter(run_dir, status)
    writer.set_status(
        state="running",
        pid=os.getpid(),
        pid_start=procs.process_start_time(os.getpid()),
        host=socket.gethostname(),
        started_at=status.started_at or runs.now_iso(),
        ended_at=None,
        error=None,
        error_detail=None,
        stop_reason=None,
        stopping_step=None,  # a Stop pending when an earlier trainer of this folder was killed
        model=cfg.model,
        train_type=cfg.train_type,
        fine_tune_type=cfg.fine_tune_type,
    )
    stop.attach(writer, lambda: 0)  # the Trainer attaches again once it counts steps
    try:
        return _train(cfg, writer, resume, stop)
    except (Exception, KeyboardInterrupt) as e:  # any failure is recorded in the run folder, then reported
        from .loop import fail

        fail(writer, e)
        return 1


def _train(cfg: TrainConfig, writer: runs.RunWriter, resume: bool, stop: StopRequested | None = None) -> int:
    from .loop import Trainer

    trainer = Trainer(cfg, writer, cfg.model, resume=resume, stop=stop)
    trainer.setup()
    return 0 if trainer.run() in runs.FINISHED_OK else 1

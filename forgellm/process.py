"""Start and stop trainer subprocesses: argument lists only (never a shell), and signals only to the
process a run folder names, after checking it is that run's trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import runs
from .errors import ForgeError
from .paths import PROJECT_ROOT


def process_start_time(pid: int) -> str | None:
    """An identifier of when `pid` started, so a recycled pid is never mistaken for our trainer."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks
        except (OSError, IndexError):
            return None
    try:  # macOS and other Unixes
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _cmdline(pid: int) -> str:
    path = Path(f"/proc/{pid}/cmdline")
    if path.exists():
        try:
            return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    try:
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def trainer_pid(run_dir: Path) -> int | None:
    """The pid of this run's live trainer, verified by start time and command line; None if not running."""
    status = runs.read_status(run_dir)
    pid = status.get("pid")
    if status.get("state") != "running" or not pid or not runs.pid_alive(pid):
        return None
    if status.get("pid_start") and status["pid_start"] != process_start_time(pid):
        return None  # the pid was recycled by another process
    if "forgellm" not in _cmdline(pid):
        return None
    return int(pid)


def trainer_argv(config_path: Path | None, overrides: list[str], resume: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "forgellm", "train"]
    if resume is not None:
        argv += ["--resume", str(resume)]
    elif config_path is not None:
        argv.append(str(config_path))
    for item in overrides:
        argv += ["--set", item]
    return argv


def launch(argv: list[str], run_dir: Path) -> subprocess.Popen:
    """Start a trainer detached from the caller (its own session), output appended to train.log.

    Detached so that closing or restarting the app never kills a run; the app re-attaches through
    the run folder.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(run_dir / runs.LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT, env=env, start_new_session=True
        )
    # Reap the child when it exits so a long-lived app never accumulates zombies.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc


def stop(run_dir: Path, wait_s: float = 0.0) -> bool:
    """Ask this run's trainer to finish its step, save and exit (SIGTERM). Returns False if not running."""
    pid = trainer_pid(run_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while wait_s and time.monotonic() < deadline and runs.pid_alive(pid):
        time.sleep(0.2)
    return True


def require_running(run_dir: Path) -> int:
    pid = trainer_pid(run_dir)
    if pid is None:
        state = runs.effective_state(runs.read_status(run_dir))
        raise ForgeError(f"no trainer is running for this run (state: {state})", str(run_dir), "nothing to stop")
    return pid


def start_training(config_path: Path | None, overrides: list[str]) -> tuple[Path, subprocess.Popen]:
    """Validate a config, then launch `python -m forgellm train` for it in the background.

    Validation happens here first so that config mistakes come back to the caller at once, with
    every problem listed, instead of as a failed run. Returns the run folder and the process.
    """
    from . import config
    from .training.session import start_run_dir

    cfg = config.load(config_path, overrides)
    if cfg.run_name is None:
        cfg.run_name = runs.new_run_name(cfg.train_type, cfg.model)
    run_dir = start_run_dir(cfg)
    argv = trainer_argv(config_path, [*overrides, f"run_name={cfg.run_name}"])
    proc = launch(argv, run_dir)
    # Visible to monitoring at once; the trainer rewrites it (same pid) as soon as it starts.
    runs.RunWriter(run_dir).set_status(
        state="running", pid=proc.pid, pid_start=process_start_time(proc.pid), step=0, total_steps=None,
        started_at=runs.now_iso(), model=cfg.model, train_type=cfg.train_type,
    )
    return run_dir, proc

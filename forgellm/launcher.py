"""The one way a trainer starts, and the one way it is stopped.

Starting, for the app and the CLI alike: resolve the config once, create the run folder atomically
(`runs.create_run_dir`: creation fails if it exists), write the resolved `config.yaml` into it, and
start `python -m forgellm train --run-dir RUN` (or `--resume RUN`) on that folder. Every trainer,
one process or an `mlx.launch` rank, reads its config from the folder and nothing else. The trainer
that writes a folder holds its `trainer.lock`, so two can never write one folder.

The app's Start refuses a second start of the same unnamed config while the first one's trainer still
starts or runs (a double click, two browser tabs); a named run's folder is created once whoever asks.

Stopping signals only the pid in status.json, and only after confirming that process still has the
recorded start time and is a ForgeLLM trainer. The first Stop lets the trainer finish its step and save;
a second ends it at once (see `forgellm.training.stopping`). Nothing here imports MLX or the training code.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import atomic, procs, runs
from .config import TrainConfig, dump_yaml
from .errors import ForgeError
from .paths import PROJECT_ROOT, home


def run_parent(cfg: TrainConfig) -> Path:
    """`output_dir`, relative to the project home unless absolute."""
    parent = Path(cfg.output_dir)
    return parent if parent.is_absolute() else home() / parent


def create_run(cfg: TrainConfig) -> Path:
    """Create the run folder for `cfg` (atomically; never an existing one) with its resolved config.yaml.

    Raises:
        ForgeError: when `cfg.run_name` names a folder that already exists, or `cfg.model` names no model
            (checked first, so a typo leaves no failed run folder behind).
    """
    from .models.registry import require_model

    require_model(cfg.model)
    run_dir = runs.create_run_dir(run_parent(cfg), cfg.run_name, runs.new_run_name(cfg.train_type, cfg.model))
    atomic.write_text(run_dir / runs.CONFIG_FILE, dump_yaml(dataclasses.replace(cfg, run_name=run_dir.name)))
    return run_dir


def trainer_argv(run_dir: Path, resume: bool) -> list[str]:
    """The command that trains the run folder `run_dir` (fresh, or resumed from its latest checkpoint)."""
    return [sys.executable, "-m", "forgellm", "train", "--resume" if resume else "--run-dir", str(run_dir)]


def trainer_env() -> dict[str, str]:
    """This environment, unbuffered, with the project importable from any working directory."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class Launched:
    run_dir: Path
    process: subprocess.Popen


_start_lock = threading.Lock()  # one check-and-start at a time: two concurrent Starts cannot both pass the check
_started_here: dict[str, Launched] = {}  # this process's unnamed starts, by `same_config_key`


def start_in_background(cfg: TrainConfig) -> Launched:
    """Create the run folder for `cfg` and start its trainer detached (the app's Start button).

    Detached (its own session, output appended to train.log) so that closing, killing or restarting the
    app never stops a run; the app re-attaches through the folder.

    Raises:
        ForgeError: when the same config is already starting or running (`refuse_duplicate_start`), or
            `cfg.run_name` names a folder that exists.
    """
    with _start_lock:
        _forget_ended_starts()
        refuse_duplicate_start(cfg)
        run_dir = create_run(cfg)
        launched = Launched(run_dir, _spawn_detached(run_dir))
        if cfg.run_name is None:
            _started_here[same_config_key(cfg)] = launched
    proc = launched.process
    threading.Thread(target=_reap, args=(proc, run_dir), name=f"reap-{proc.pid}", daemon=True).start()
    return launched


def _forget_ended_starts() -> None:
    for key in [key for key, launched in _started_here.items() if launched.process.poll() is not None]:
        del _started_here[key]


def _spawn_detached(run_dir: Path) -> subprocess.Popen:
    with open(run_dir / runs.LOG_FILE, "ab") as log:
        return subprocess.Popen(
            trainer_argv(run_dir, resume=False),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=trainer_env(),
            start_new_session=True,
        )


def same_config_key(cfg: TrainConfig) -> str:
    """What makes two starts "the same config": every resolved key (output_dir included) but run_name."""
    return dump_yaml(dataclasses.replace(cfg, run_name=None))


def refuse_duplicate_start(cfg: TrainConfig) -> None:
    """Refuse to start an unnamed config whose earlier start is still starting or running.

    Two Start clicks, or two browser tabs starting the same form, would otherwise train the same run
    twice side by side (the same seed gives the same curve) and halve the speed of both. A named run
    needs no check: its folder is created once, whoever asks, and the second start is refused there.
    Set run_name, or change the seed, to train a config again alongside itself on purpose.

    Raises:
        ForgeError: naming the run that is already training this config.
    """
    if cfg.run_name is not None:
        return
    key = same_config_key(cfg)
    twin = _live_start_here(key) or _running_run_with(cfg, key)
    if twin is not None:
        raise ForgeError(
            f"this config is already being trained as run {twin.name} (starting or running); "
            "a second Start would train it twice",
            str(twin),
            "wait for it to end or stop it; to train it again alongside, change the seed or set run_name",
        )


def _live_start_here(key: str) -> Path | None:
    """The run this process started from the same config, while its trainer process lives (starting
    included: it has written no status yet)."""
    earlier = _started_here.get(key)
    if earlier is None or earlier.process.poll() is not None:
        return None
    return earlier.run_dir


def _running_run_with(cfg: TrainConfig, key: str) -> Path | None:
    """A running run in the same runs folder trained with the same config: one started before the app
    was restarted, from another app process, or by the CLI."""
    from . import config

    for run in runs.list_runs(run_parent(cfg)):
        if run.state != "running":
            continue
        try:
            theirs = config.load(run.path / runs.CONFIG_FILE)
        except (ForgeError, OSError):  # unreadable: not provably the same config
            continue
        if same_config_key(theirs) == key:
            return run.path
    return None


def _reap(proc: subprocess.Popen, run_dir: Path) -> None:
    """Wait for the trainer (no zombie in a long-lived app); if it died before writing any status
    (e.g. a broken environment), record that, so the run does not look as if it were starting forever."""
    code = proc.wait()
    if (run_dir / runs.STATUS_FILE).exists():
        return
    runs.write_status(
        run_dir,
        runs.RunStatus(
            state="failed",
            error=f"the trainer exited with code {code} before it started (see train.log)",
            started_at=runs.now_iso(),
            ended_at=runs.now_iso(),
        ),
    )


def _holder_text(run_dir: Path) -> str:
    """Who holds the lock: the holder writes its pid into the lock file as soon as it has it."""
    holder = procs.FolderLock(Path(run_dir) / runs.LOCK_FILE).holder()
    return f"trainer pid {holder}" if holder else "another trainer"


def claim(run_dir: Path) -> procs.FolderLock:
    """Take the run folder's trainer lock for this process, or refuse naming who holds it.

    Raises:
        ForgeError: when a live trainer already writes this folder.
    """
    try:
        return procs.FolderLock(Path(run_dir) / runs.LOCK_FILE).acquire()
    except OSError as e:  # e.g. a network filesystem without locks
        raise ForgeError(
            f"cannot lock the run folder ({e.strerror or e})", str(run_dir), "put output_dir on a local disk"
        ) from e
    except procs.LockHeld as e:
        raise ForgeError(
            f"this run is being trained right now by {_holder_text(run_dir)}",
            str(run_dir),
            f"wait for it to end, or stop it first with `python -m forgellm stop {run_dir}`",
        ) from e


def require_not_running(run_dir: Path) -> None:
    """Refuse early (before starting ranks or loading a model) when a trainer holds the folder."""
    claim(run_dir).release()


def trainer_pid(run_dir: Path) -> int | None:
    """The pid of this run's live trainer, or None.

    Confirmed three ways: the status says running, that pid is alive with the recorded start time,
    and its command line is a ForgeLLM trainer. A status without a start time is never confirmed.
    """
    try:
        status = runs.read_status(run_dir)
    except ForgeError:
        return None
    if status.state != "running" or not status.is_alive():
        return None
    if "forgellm" not in procs.cmdline(status.pid):
        return None
    return int(status.pid)


def stop(run_dir: Path, wait_s: float = 0.0) -> bool:
    """Ask this run's trainer to finish its step, save and exit (SIGTERM); one already stopping ends at
    once. False when none is running."""
    pid = trainer_pid(run_dir)
    if pid is None or not _sigterm(pid):
        return False
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and procs.pid_alive(pid):
        time.sleep(0.2)
    return True


def _sigterm(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended between the check and the signal
        return False
    return True


# What the app's Stop did (`request_stop`).
NOT_RUNNING = "not running"
STOPPING = "stopping"  # the trainer finishes its step, saves and exits
ENDING_NOW = "ending now"  # it was already stopping: this second Stop ends it at once
REPEATED = "repeated"  # this app signalled it a moment ago: a double click, not sent again

# A Stop repeated sooner than this after this app's previous one is the same click, not a second Stop,
# which would drop the step in progress and every step since the last checkpoint.
REPEATED_STOP_S = 1.0
_stop_lock = threading.Lock()
_stops_sent: dict[tuple[int, str | None], float] = {}  # (pid, start time) -> when this process signalled it


def request_stop(run_dir: Path) -> str:
    """The app's Stop: one of NOT_RUNNING, STOPPING, ENDING_NOW or REPEATED (see their comments)."""
    pid = trainer_pid(run_dir)
    if pid is None:
        return NOT_RUNNING
    status = runs.read_status(run_dir)
    key = (pid, status.pid_start)
    with _stop_lock:
        previous = _stops_sent.get(key)
        if previous is not None and time.monotonic() - previous < REPEATED_STOP_S:
            return REPEATED
        if not _sigterm(pid):
            return NOT_RUNNING
        _stops_sent[key] = time.monotonic()
    return ENDING_NOW if status.stopping_step is not None or previous is not None else STOPPING


def require_running(run_dir: Path) -> int:
    """The live trainer's pid, or a ForgeError saying what state the run is in."""
    pid = trainer_pid(run_dir)
    if pid is None:
        state = runs.summarize(run_dir).state
        raise ForgeError(f"no trainer is running for this run (state: {state})", str(run_dir), "nothing to stop")
    return pid


def delete_run(parent: Path, name: str) -> Path:
    """Delete the run folder `name` directly under `parent` (the runs folder); returns the path deleted.

    Only a real run folder made by ForgeLLM (status.json or config.yaml in it) that no trainer holds:
    the folder's trainer lock is taken first, so a trainer cannot start in it meanwhile, and the folder is
    renamed aside before it is removed, so it never shows half-deleted.

    Raises:
        ForgeError: for a name that is not a plain folder name (`..`, a path, hidden), a link, a folder
            that is not a run, or a run that is being trained.
    """
    name = name or ""
    if name in ("", ".", "..") or name.startswith(".") or any(c in name for c in ("/", "\\", "\0")):
        raise ForgeError(f"{name!r} is not a run name", "run", "pick a run from the list")
    parent = Path(parent).resolve()
    run_dir = parent / name
    if run_dir.is_symlink():
        raise ForgeError(
            "this run is a link, not a folder ForgeLLM made: left untouched", str(run_dir), "remove the link yourself"
        )
    if not run_dir.is_dir():
        raise ForgeError("no such run", str(run_dir), "refresh the run list")
    if not runs.is_run_dir(run_dir):
        raise ForgeError("not a run folder (no status.json or config.yaml): left untouched", str(run_dir), "pick a run")
    lock = claim(run_dir)  # refuses while a trainer writes the folder
    try:
        if trainer_pid(run_dir) is not None:  # alive but on a filesystem where the lock did not hold
            raise ForgeError("this run is being trained right now", str(run_dir), "stop it first, then delete it")
        doomed = parent / f".{name}.deleting-{os.getpid()}"
        os.replace(run_dir, doomed)
    finally:
        lock.release()
    shutil.rmtree(doomed)
    return run_dir

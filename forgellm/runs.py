"""The run folder contract: the only channel between a trainer subprocess and everything else.

    runs/<run-id>/
      config.yaml          the resolved config, every default filled in (written by the launcher)
      status.json          a `RunStatus`, replaced atomically
      metrics.jsonl        one `TrainRecord` or `ValRecord` per line, appended whole
      metrics_columns.npz  metrics.jsonl up to the last checkpoint as columns (derived; see metrics_reader)
      train.log            the trainer's output
      data_report.json     what the data pipeline read, kept and dropped
      chat_template.jinja  only when IFT used the default chat template (chat and fuse reuse it)
      trainer.lock         flock'ed by the one live trainer of this folder
      checkpoints/<step>/  adapters.safetensors, adapter_config.json, optimizer.safetensors, trainer_state.json
      checkpoints/best     symlink to the best-validation checkpoint
      eval_gain_forgetting.json  gain and forgetting of base and checkpoints (written by `forgellm eval --gain`)

Every file and link name of the folder is defined here, and every reader and writer goes through the
types below. The trainer writes; monitoring, chat and publishing only read. Nothing here imports MLX
or Gradio.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from . import atomic, procs
from .errors import ForgeError

# ---- names -----------------------------------------------------------------------------------------

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
METRIC_COLUMNS_FILE = "metrics_columns.npz"
LOG_FILE = "train.log"
DATA_REPORT_FILE = "data_report.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
LOCK_FILE = "trainer.lock"
CHECKPOINTS = "checkpoints"
BEST_LINK = "best"
TRAINER_STATE_FILE = "trainer_state.json"
ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
GAIN_FILE = "eval_gain_forgetting.json"  # `forgellm eval --gain`: perplexity of base and checkpoints (forgellm.gain)

# States a trainer records, and the two that only readers derive.
STATES = ("running", "completed", "stopped", "early_stopped", "failed")
FINISHED_OK = ("completed", "stopped", "early_stopped")
DEAD = "dead"  # recorded "running", but that process is gone: killed, crashed or powered off
UNKNOWN = "unknown"  # no readable status.json


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- records ---------------------------------------------------------------------------------------


@dataclass
class RunStatus:
    """What status.json says. Older or partial files still read: missing keys take these defaults and
    keys this version does not know are kept in `extra` and written back unchanged."""

    state: str = UNKNOWN
    pid: int | None = None
    pid_start: str | None = None  # the trainer's start time: with pid, identifies the process
    host: str | None = None  # where that process runs (rank 0 of a multi-host run may be elsewhere)
    step: int = 0
    total_steps: int | None = None
    started_at: str | None = None
    updated_at: str | None = None
    ended_at: str | None = None
    model: str | None = None
    train_type: str | None = None
    fine_tune_type: str | None = None
    world_size: int | None = None  # data-parallel ranks training this run (1: one process)
    epoch: float | None = None
    tokens_per_sec: float | None = None
    eta_s: float | None = None
    best_step: int | None = None
    best_val_loss: float | None = None
    last_checkpoint: int | None = None
    stop_reason: str | None = None
    stopping_step: int | None = None  # a Stop is pending: the trainer finishes this step, saves and exits
    error: str | None = None  # one line
    error_detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        status = cls(**{k: v for k, v in data.items() if k in known})
        status.extra = {k: v for k, v in data.items() if k not in known}
        return status

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    def update(self, **changes: Any) -> None:
        """Set fields by name; a misspelt name is a TypeError, not a silently added key."""
        fields = {f.name for f in dataclasses.fields(self)} - {"extra"}
        for name, value in changes.items():
            if name not in fields:
                raise TypeError(f"RunStatus has no field {name!r}")
            setattr(self, name, value)

    def is_alive(self) -> bool:
        """The recorded trainer process still runs (same pid *and* same start time, on this machine)."""
        return self.is_local() and procs.same_process(self.pid, self.pid_start)

    def is_local(self) -> bool:
        return self.host is None or self.host == socket.gethostname()

    def effective_state(self) -> str:
        """The state to show: a recorded 'running' whose process is gone is `dead`.

        A trainer on another machine (rank 0 of a multi-host run) cannot be checked from here: its
        recorded state is shown as it is.
        """
        if self.state == "running" and self.is_local() and not self.is_alive():
            return DEAD
        return self.state


@dataclass
class TrainRecord:
    """One training report: the mean loss over the steps since the previous report."""

    split: ClassVar[str] = "train"
    step: int
    loss: float
    lr: float | None = None
    tokens_per_sec: float | None = None
    trained_tokens: int | None = None
    peak_memory_gb: float | None = None
    epoch: float | None = None
    grad_norm: float | None = None  # only when max_grad_norm clips
    elapsed_s: float = 0.0  # training seconds so far, continued across resumes (set when written)


@dataclass
class ValRecord:
    """One validation: token-weighted mean loss over the validation set."""

    split: ClassVar[str] = "val"
    step: int
    loss: float
    ppl: float | None = None
    val_time_s: float | None = None
    elapsed_s: float = 0.0


MetricRecord = TrainRecord | ValRecord
_RECORD_TYPES: dict[str, type[TrainRecord] | type[ValRecord]] = {"train": TrainRecord, "val": ValRecord}


def record_to_dict(record: MetricRecord) -> dict[str, Any]:
    data = {"step": record.step, "split": record.split}
    data.update((k, v) for k, v in dataclasses.asdict(record).items() if v is not None and k != "step")
    return data


def record_from_dict(data: dict[str, Any]) -> MetricRecord | None:
    """A metrics.jsonl object as a typed record; None for a line this version cannot use."""
    split = data.get("split")
    cls = _RECORD_TYPES.get(split) if isinstance(split, str) else None  # a hand-edited line may hold anything
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError:  # a required field is missing
        return None


# ---- writing (trainer side) ------------------------------------------------------------------------


@dataclass
class RunWriter:
    """Appends metrics and rewrites status for one run folder (only the process holding its lock)."""

    run_dir: Path
    status: RunStatus = field(default_factory=RunStatus)
    read_only: bool = False  # distributed ranks other than 0 keep time but write nothing
    _t0: float = field(default_factory=time.monotonic)
    _elapsed_offset: float = 0.0
    # Status is written from two threads (the loop, and the stop watcher that marks a Stop at once): each
    # change and its write happen under this lock, so no older snapshot can land after a newer one.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if not self.read_only:
            (self.run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        """Seconds of training so far, continued across resumes."""
        return self._elapsed_offset + time.monotonic() - self._t0

    def continue_from(self, elapsed_s: float) -> None:
        self._elapsed_offset = elapsed_s
        self._t0 = time.monotonic()

    def set_status(self, **changes: Any) -> None:
        with self.lock:
            self.status.update(**changes)
            if self.read_only:
                return
            self.status.updated_at = now_iso()
            write_status(self.run_dir, self.status)

    def log_metrics(self, record: MetricRecord) -> None:
        """Append one JSON line; a single write() keeps concurrent readers from seeing half a record."""
        if self.read_only:
            return
        record.elapsed_s = round(self.elapsed(), 3)
        line = json.dumps(record_to_dict(record), allow_nan=True) + "\n"
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(line)


def write_status(run_dir: Path, status: RunStatus) -> None:
    atomic.write_json(Path(run_dir) / STATUS_FILE, status.to_dict())


def truncate_metrics_after(run_dir: Path, step: int) -> None:
    """On resume from checkpoint `step`, drop records logged after it (they will be logged again)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines(True)
        if _step_at_most(line, step)
    ]
    atomic.write_text(path, "".join(kept))


def _step_at_most(line: str, step: int) -> bool:
    """A whole metrics line logged at or before `step` (lines of other kinds are kept as they are)."""
    if not line.endswith("\n"):
        return False  # torn by a killed trainer
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return False
    value = data.get("step") if isinstance(data, dict) else None
    return not isinstance(value, (int, float)) or value <= step


# ---- reading (monitoring, chat, publishing side) ---------------------------------------------------


def read_status(run_dir: Path) -> RunStatus:
    """The run's status; an empty `RunStatus` (state unknown) when there is none yet.

    Raises:
        ForgeError: when status.json exists but is not a JSON object (writes are atomic, so only a
            hand edit or a disk fault can do that).
    """
    path = Path(run_dir) / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RunStatus()
    except OSError as e:
        raise ForgeError(f"cannot read the status file ({e.strerror or e})", str(path), "check its permissions") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ForgeError(
            f"status file is not valid JSON ({e})", str(path), "restore it, or delete it to see the run as unknown"
        ) from e
    if not isinstance(data, dict):
        raise ForgeError(
            "status file is not a JSON object", str(path), "restore it, or delete it to see the run as unknown"
        )
    return RunStatus.from_dict(data)


def read_metrics(run_dir: Path, since_line: int = 0) -> list[MetricRecord]:
    """Metric records in file order; a torn last line (trainer mid-write, or killed mid-write) and
    lines of an unknown kind are skipped, not errors."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if i < since_line or not line.endswith("\n"):
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            record = record_from_dict(data) if isinstance(data, dict) else None
            if record is not None:
                records.append(record)
    return records


def tail_log(run_dir: Path, lines: int = 40) -> str:
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# ---- checkpoints -----------------------------------------------------------------------------------


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return checkpoints_dir(run_dir) / str(step)


def best_link(run_dir: Path) -> Path:
    return checkpoints_dir(run_dir) / BEST_LINK


def is_complete_checkpoint(folder: Path) -> bool:
    """A checkpoint is complete once its trainer_state.json exists (it is written last)."""
    return (Path(folder) / TRAINER_STATE_FILE).is_file()


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of complete checkpoints, ascending."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and is_complete_checkpoint(p))


def best_step(run_dir: Path) -> int | None:
    link = best_link(run_dir)
    if link.is_symlink():
        target = os.readlink(link)
        return int(target) if target.isdigit() else None
    return None


def best_checkpoint(run_dir: Path) -> Path | None:
    link = best_link(run_dir)
    if link.exists() and is_complete_checkpoint(link):
        return link.resolve()
    return None


def resolve_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """`best`, `latest` or a step number → the checkpoint folder; a clear error when absent."""
    run_dir = Path(run_dir)
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise ForgeError("this run has no complete checkpoint yet", str(run_dir), "train longer or wait for save_every")
    if which == BEST_LINK:
        best = best_checkpoint(run_dir)
        return best if best is not None else checkpoint_dir(run_dir, steps[-1])
    if which == "latest":
        return checkpoint_dir(run_dir, steps[-1])
    if str(which).isdigit() and int(which) in steps:
        return checkpoint_dir(run_dir, int(which))
    raise ForgeError(
        f"checkpoint {which!r} not found (available: best, latest, {', '.join(map(str, steps))})",
        str(run_dir),
        "pick one of the available checkpoints",
    )


def adapter_dir(path: Path, which: str = "best") -> Path:
    """Accept a run folder or a checkpoint folder; return a folder holding adapter_config.json."""
    path = Path(path)
    if (path / ADAPTER_CONFIG_FILE).is_file():
        return path
    if checkpoints_dir(path).is_dir() or (path / STATUS_FILE).is_file():
        return resolve_checkpoint(path, which)
    raise ForgeError(
        "not a run folder or checkpoint folder", str(path), "pass runs/<run-id> or runs/<run-id>/checkpoints/<step>"
    )


def read_adapter_config(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / ADAPTER_CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ForgeError(f"cannot read the adapter config ({e})", str(path), "pick another checkpoint") from e


def base_model_of(checkpoint: Path) -> Path:
    """The local folder of the base model a checkpoint was trained on.

    The recorded folder when it still exists, else the recorded model name resolved again (a built-in
    model is rebuilt, a Hub id is looked up).
    """
    from .models.registry import resolve_model

    config = read_adapter_config(checkpoint)
    recorded = Path(config.get("model", ""))
    if config.get("model") and recorded.is_dir():
        return recorded
    if config.get("base_model"):
        return resolve_model(config["base_model"])
    raise ForgeError(
        "the checkpoint does not say which base model it belongs to",
        str(checkpoint),
        "retrain, or fuse with mlx_lm fuse --model",
    )


def adapter_base_mismatch(model_path: Path, adapter_dir: Path) -> str | None:
    """The base model an adapter was trained on when `model_path` is not it (nor a same-shaped copy), else None.

    None too when that base cannot be found here: mlx-lm's load still rejects a mismatched shape.
    """
    from .errors import ForgeError

    try:
        trained_on = base_model_of(adapter_dir)
    except ForgeError:
        return None
    if trained_on.resolve() == Path(model_path).resolve() or _config_shape(trained_on) == _config_shape(model_path):
        return None
    return base_model_name(adapter_dir)


def _config_shape(model_path: Path) -> tuple | None:
    try:
        c = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")
    return tuple(c.get(k) for k in keys)


def base_model_name(checkpoint: Path) -> str:
    """How the user named the base model (`tiny`, a folder, a Hub id), for messages."""
    config = read_adapter_config(checkpoint)
    return str(config.get("base_model") or config.get("model") or "?")


def run_chat_template(checkpoint: Path) -> str | None:
    """The chat template a run stored because its data used a default one (chat and fuse must reuse it)."""
    for folder in (Path(checkpoint), Path(checkpoint).parent.parent):
        path = folder / CHAT_TEMPLATE_FILE
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return None


# ---- run folders -----------------------------------------------------------------------------------


def new_run_name(train_type: str, model: str) -> str:
    """`<UTC timestamp>-<train_type>-<model>`: sortable and readable (`create_run_dir` makes it unique)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    model_tag = "".join(c if c.isalnum() or c in "-." else "-" for c in Path(model).name)[:40]
    return f"{stamp}-{train_type}-{model_tag}"


def create_run_dir(parent: Path, name: str | None, default_name: str) -> Path:
    """Create a new, empty run folder atomically and return it.

    A given `name` must be free: the folder is made with one `mkdir` (no check-then-create), so of two
    launchers racing for the same name exactly one wins. Without a name, `default_name` gets a `-2`,
    `-3`, ... suffix until one is free, so runs started in the same second get distinct folders.

    Raises:
        ForgeError: when `name` is given and that folder already exists.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    if name:
        run_dir = parent / name
        try:
            run_dir.mkdir()
        except FileExistsError as e:
            raise ForgeError(
                "a run already exists in this folder",
                str(run_dir),
                f"continue it with `python -m forgellm train --resume {run_dir}` or choose another run_name",
            ) from e
        return run_dir
    for attempt in range(1, 1000):
        run_dir = parent / (default_name if attempt == 1 else f"{default_name}-{attempt}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise ForgeError("too many runs with the same name", str(parent / default_name), "set run_name")


def is_run_dir(path: Path) -> bool:
    return (Path(path) / STATUS_FILE).is_file() or (Path(path) / CONFIG_FILE).is_file()


@dataclass
class RunSummary:
    """One line of a run listing."""

    name: str
    path: Path
    state: str  # effective: running, completed, stopped, early_stopped, failed, dead or unknown
    status: RunStatus


def summarize(run_dir: Path) -> RunSummary:
    """The run's status and effective state; a corrupt status.json shows as `unknown`, not an error."""
    run_dir = Path(run_dir)
    try:
        status = read_status(run_dir)
    except ForgeError as e:
        status = RunStatus(error=e.what)
    return RunSummary(run_dir.name, run_dir, status.effective_state(), status)


def list_runs(parent: Path) -> list[RunSummary]:
    """Every run folder under `parent`, newest first."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    found = [
        summarize(run_dir)
        for run_dir in parent.iterdir()
        if run_dir.is_dir() and not run_dir.name.startswith(".") and is_run_dir(run_dir)
    ]
    return sorted(found, key=_newest_first_key, reverse=True)


def _newest_first_key(run: RunSummary) -> str:
    """When the run started; for a run that has not written it yet, when its folder was made."""
    if run.status.started_at:
        return run.status.started_at
    made = datetime.fromtimestamp(run.path.stat().st_mtime, timezone.utc)
    return made.isoformat(timespec="seconds")

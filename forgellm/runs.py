"""The run folder contract: the only channel between a trainer subprocess and everything else.

    runs/<run-id>/
      config.yaml        the resolved config, every default filled in
      status.json        state, pid, step, total_steps, started_at, ended_at, error, best ... (atomic)
      metrics.jsonl      one JSON object per report: step, split (train|val), loss, elapsed_s, ...
      train.log          the trainer's output
      data_report.json   what the data pipeline read, kept and dropped
      checkpoints/<step>/  adapters.safetensors + adapter_config.json + trainer_state.json (+ optimizer.safetensors)
      checkpoints/best   symlink to the best-validation checkpoint

The trainer writes; monitoring, chat and publishing only read. Nothing here imports MLX or Gradio.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import atomic
from .errors import ForgeError

STATES = ("running", "completed", "stopped", "early_stopped", "failed")
FINISHED_OK = ("completed", "stopped", "early_stopped")
CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
DATA_REPORT_FILE = "data_report.json"
CHECKPOINTS = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_name(train_type: str, model: str) -> str:
    """`<UTC timestamp>-<train_type>-<model>`: sortable, readable, unique to the second."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    model_tag = "".join(c if c.isalnum() or c in "-." else "-" for c in Path(model).name)[:40]
    return f"{stamp}-{train_type}-{model_tag}"


# --------------------------------------------------------------------------------------------------
# Writing (trainer side)


@dataclass
class RunWriter:
    """Appends metrics and rewrites status for one run folder."""

    run_dir: Path
    status: dict[str, Any] = field(default_factory=dict)
    read_only: bool = False  # distributed ranks other than 0 keep time but write nothing
    _t0: float = field(default_factory=time.monotonic)
    _elapsed_offset: float = 0.0

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
        self.status.update(changes)
        if self.read_only:
            return
        self.status["updated_at"] = now_iso()
        atomic.write_json(self.run_dir / STATUS_FILE, self.status)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line; a single write() keeps concurrent readers from seeing half a record."""
        if self.read_only:
            return
        record = {**record, "elapsed_s": round(self.elapsed(), 3)}
        line = json.dumps(record, allow_nan=True) + "\n"
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(line)


def truncate_metrics_after(run_dir: Path, step: int) -> None:
    """On resume from checkpoint `step`, drop records logged after it (they will be logged again)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# --------------------------------------------------------------------------------------------------
# Reading (monitoring, chat, publishing side)


def read_status(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:  # only possible if someone edited it by hand: writes are atomic
        raise ForgeError(f"status file is not valid JSON ({e})", str(path), "delete it or restore it") from e


def effective_state(status: dict[str, Any]) -> str:
    """The state to show: a 'running' run whose trainer process is gone is reported as 'failed'."""
    state = status.get("state", "unknown")
    if state == "running" and not pid_alive(status.get("pid")):
        return "failed"
    return state


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def read_metrics(run_dir: Path, since_line: int = 0) -> list[dict[str, Any]]:
    """Metric records; a partially written last line (trainer mid-write) is skipped, not an error."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < since_line or not line.endswith("\n"):
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
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


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of complete checkpoints (a checkpoint is complete once its trainer_state.json exists)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    steps = [int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / TRAINER_STATE_FILE).is_file()]
    return sorted(steps)


def best_checkpoint(run_dir: Path) -> Path | None:
    link = Path(run_dir) / CHECKPOINTS / "best"
    if link.exists() and (link / TRAINER_STATE_FILE).is_file():
        return link.resolve()
    return None


def resolve_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """`best`, `latest` or a step number → the checkpoint folder; a clear error when absent."""
    run_dir = Path(run_dir)
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise ForgeError("this run has no complete checkpoint yet", str(run_dir), "train longer or wait for save_every")
    if which == "best":
        best = best_checkpoint(run_dir)
        return best if best is not None else run_dir / CHECKPOINTS / str(steps[-1])
    if which == "latest":
        return run_dir / CHECKPOINTS / str(steps[-1])
    if str(which).isdigit() and int(which) in steps:
        return run_dir / CHECKPOINTS / str(int(which))
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
    if (path / CHECKPOINTS).is_dir() or (path / STATUS_FILE).is_file():
        return resolve_checkpoint(path, which)
    raise ForgeError("not a run folder or checkpoint folder", str(path), "pass runs/<run-id> or runs/<run-id>/checkpoints/<step>")


def run_chat_template(checkpoint: Path) -> str | None:
    """The chat template a run stored because its data used a default one (chat and fuse must reuse it)."""
    for folder in (Path(checkpoint), Path(checkpoint).parent.parent):
        path = folder / "chat_template.jinja"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return None


def is_run_dir(path: Path) -> bool:
    return (Path(path) / STATUS_FILE).is_file() or (Path(path) / CONFIG_FILE).is_file()


def list_runs(parent: Path) -> list[dict[str, Any]]:
    """Every run folder under `parent`, newest first, with its effective state and progress."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    out = []
    for run_dir in parent.iterdir():
        if not run_dir.is_dir() or run_dir.name.startswith(".") or not is_run_dir(run_dir):
            continue
        try:
            status = read_status(run_dir)
        except ForgeError:
            status = {"state": "unknown"}
        out.append(
            {
                "name": run_dir.name,
                "path": str(run_dir),
                "state": effective_state(status),
                "step": status.get("step", 0),
                "total_steps": status.get("total_steps"),
                "started_at": status.get("started_at", ""),
                "best_val_loss": status.get("best_val_loss"),
            }
        )
    return sorted(out, key=lambda r: (r["started_at"] or "", r["name"]), reverse=True)

"""Run summaries for people: the one-line status the Training and Monitoring tabs show, and a cheap
signature that tells the Monitoring tab whether anything on screen could have changed. No Gradio."""

from __future__ import annotations

import math
from pathlib import Path

from . import runs


def run_signature(run_dir: Path) -> tuple:
    """Changes whenever anything the Monitoring tab shows could change; cheap (a few stat calls).

    The effective state is part of it because a trainer that dies changes no file.
    """
    sizes = []
    for name in (runs.STATUS_FILE, runs.METRICS_FILE, runs.LOG_FILE):
        try:
            st = (run_dir / name).stat()
            sizes.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            sizes.append(None)
    return (str(run_dir), runs.summarize(run_dir).state, *sizes)


def format_duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s` or `42s`."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _dead_note(run: runs.RunSummary) -> str:
    steps = runs.checkpoint_steps(run.path)
    ended = "The trainer ended without recording why (killed or crashed)"
    resume = f"`python -m forgellm train --resume {run.path}`"
    if steps:
        return f"{ended}. {resume} continues from checkpoint {steps[-1]}."
    return f"{ended} before its first checkpoint. {resume} starts it again."


def status_summary(run: runs.RunSummary) -> str:
    """Markdown for a run: state, step/total, epoch, tokens/s, ETA, best validation, and why it ended."""
    status = run.status
    if run.state == runs.UNKNOWN:
        return (
            f"No readable status: {status.error}"
            if status.error
            else "No status yet (the trainer has not started writing)."
        )
    stopping = run.state == "running" and status.stopping_step is not None
    state = f"**stopping**: finishing step {status.stopping_step}" if stopping else f"**{run.state}**"
    parts = [state, f"step {status.step}/{status.total_steps or '?'}"]
    if status.epoch is not None:
        parts.append(f"epoch {status.epoch:.2f}")
    if status.tokens_per_sec:
        parts.append(f"{status.tokens_per_sec:,.0f} tok/s")
    if run.state == "running" and status.eta_s is not None:
        parts.append(f"ETA {format_duration(status.eta_s)}")
    if status.best_val_loss is not None:
        best_step = status.best_step if status.best_step is not None else "?"
        parts.append(f"best val loss {status.best_val_loss:.4f} at step {best_step}")
    if status.stop_reason:
        parts.append(f"stopped because: {status.stop_reason}")
    line = " · ".join(parts)
    if stopping:
        line += "\n\nThen it saves a checkpoint and exits. Stop again ends it now, without finishing that step."
    if run.state == "failed":
        line += f"\n\n**Error:** {status.error or 'no reason recorded (see the log)'}"
    if run.state == runs.DEAD:
        line += f"\n\n{_dead_note(run)}"
    return line

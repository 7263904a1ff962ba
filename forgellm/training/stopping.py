"""Stop requests: the first SIGTERM/SIGINT (or FORGELLM_STOP_AT_STEP) means "finish the step, save, exit";
a second one means "now".

A step can take minutes inside MLX, and while it computes the main thread runs no Python, so a Python
signal handler would wait for the step to end. The signals are heard instead by a watcher thread, woken
through `signal.set_wakeup_fd` (the C-level handler writes the signal number to it at once; MLX releases
the GIL while it computes):

- the first marks the run as stopping in status.json straight away (`stopping_step`, the step being
  finished), so the app shows it; the training loop saves and exits after that step;
- the second records the run `stopped` at its last complete step and ends the process within moments.
  The step in progress is dropped; the checkpoints on disk are whole (written aside and renamed), so the
  last complete one is what `--resume` continues from.

Kept free of MLX at import, so a trainer installs it before its slow start-up (importing MLX, building
the model, preparing data): a Stop that early still ends in a recorded run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from .. import runs

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested:
    """Set by the first SIGTERM/SIGINT; the loop finishes the current step, saves and exits cleanly."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.requests = 0  # stop signals heard so far
        # Acts as if Stop were pressed right after this step: makes interrupt-and-resume reproducible.
        self.at_step = int(os.environ.get("FORGELLM_STOP_AT_STEP", "0")) or None
        self._writer: runs.RunWriter | None = None
        self._completed_steps: Callable[[], int] = lambda: 0

    def check_step(self, step: int) -> None:
        if self.at_step is not None and step >= self.at_step and self.signal_name is None:
            self.signal_name = "FORGELLM_STOP_AT_STEP"

    def attach(self, writer: runs.RunWriter, completed_steps: Callable[[], int]) -> None:
        """Where a Stop is recorded the moment it is heard, and how to ask how many steps are complete."""
        self._writer, self._completed_steps = writer, completed_steps
        if self.requests == 1:  # heard before there was a run to mark
            self._mark_stopping()

    def install(self) -> None:
        """Hear SIGTERM/SIGINT on a watcher thread from now on (call from the main thread)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd's rule: a signal handler must never block
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            # The Python-level handler does nothing: it only replaces the default action (exit, or
            # KeyboardInterrupt); the watcher acts, also while the main thread is inside MLX.
            signal.signal(sig, _heard_by_the_watcher)
        threading.Thread(target=self._watch, args=(read_fd,), name="stop-watcher", daemon=True).start()

    def _watch(self, read_fd: int) -> None:
        while True:
            for signum in os.read(read_fd, 64):
                if signum in STOP_SIGNALS:
                    self.heard(signal.Signals(signum).name)

    def heard(self, signal_name: str) -> None:
        """One Stop: the first asks for a clean stop after the step, a second ends the process now."""
        self.requests += 1
        if self.requests == 1:
            self.signal_name = self.signal_name or signal_name
            self._mark_stopping()
        else:
            self._stop_now(signal_name)

    def _mark_stopping(self) -> None:
        writer = self._writer
        if writer is None:
            return
        with writer.lock:
            if writer.status.state != "running":
                return
            step = self._completed_steps() + 1
            writer.set_status(stopping_step=step)
        _say(f"{self.signal_name}: finishing step {step}, then saving and exiting (a second Stop ends it now)")

    def _stop_now(self, signal_name: str) -> None:
        """Record the run stopped at its last complete step, then end the process (no cleanup to wait for)."""
        writer = self._writer
        if writer is None:  # no run to record yet: end as the signal would have
            os._exit(128 + signal.Signals[signal_name].value)
        with writer.lock:  # held until the end: no status write of the training thread can come after
            state = writer.status.state
            if state == "running":
                record_stopped_now(writer, self._completed_steps(), signal_name)
                state = "stopped"
            _flush_output()
            os._exit(0 if state in runs.FINISHED_OK else 1)

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def agree(self, world: Any) -> bool:
        """Every rank stops at the same step if any rank was asked to (rank 0 gets the signal)."""
        import mlx.core as mx

        if world.size() == 1:
            return bool(self)
        votes = mx.distributed.all_sum(mx.array(1.0 if self else 0.0), stream=mx.cpu).item()
        if votes and not self:
            self.signal_name = "stop on another rank"
        return votes > 0


def record_stopped_now(writer: runs.RunWriter, completed: int, signal_name: str) -> None:
    """status.json for a trainer ended by a second Stop: `stopped` at `completed` steps, the step in
    progress dropped, and the checkpoint a resume continues from (the newest whole one on disk)."""
    steps = runs.checkpoint_steps(writer.run_dir)
    kept = f"resume continues from checkpoint {steps[-1]}" if steps else "no checkpoint yet: resume starts over"
    reason = f"stopped at once by a second {signal_name}: step {completed + 1} was not finished; {kept}"
    writer.set_status(
        state="stopped",
        step=completed,
        stop_reason=reason,
        stopping_step=None,
        last_checkpoint=steps[-1] if steps else None,
        ended_at=runs.now_iso(),
        pid=None,
    )
    _say(reason)


def _heard_by_the_watcher(_signum: int, _frame: Any) -> None:
    """Installed for SIGTERM/SIGINT so they neither kill the process nor raise; the watcher thread acts."""


def _say(message: str) -> None:
    print(message, flush=True)


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed stream: nothing to lose
            pass

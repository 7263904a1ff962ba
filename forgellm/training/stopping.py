"""Stop requests: SIGTERM/SIGINT (or FORGELLM_STOP_AT_STEP) turn into "finish the step, save, exit".

Kept free of MLX at import, so a trainer installs the handler before its slow start-up (importing
MLX, building the model, preparing data): a Stop that early still ends in a recorded run.
"""

from __future__ import annotations

import os
import signal
from typing import Any


class StopRequested:
    """Set by SIGTERM/SIGINT; the loop finishes the current step, saves and exits cleanly."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        # Acts as if Stop were pressed right after this step: makes interrupt-and-resume reproducible.
        self.at_step = int(os.environ.get("FORGELLM_STOP_AT_STEP", "0")) or None

    def check_step(self, step: int) -> None:
        if self.at_step is not None and step >= self.at_step and self.signal_name is None:
            self.signal_name = "FORGELLM_STOP_AT_STEP"

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C means "now"
        self.signal_name = signal.Signals(signum).name

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

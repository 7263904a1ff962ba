"""Best-checkpoint tracking and early stopping, as a pure object fed one validation loss at a time.

Kept free of MLX so tests can feed known loss sequences and check the exact step it stops at.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Verdict:
    is_best: bool  # lowest validation loss so far: this step's weights become the best checkpoint
    stop_reason: str | None  # set when training should stop now


@dataclass
class EarlyStopper:
    """Each evaluation counts exactly once.

    - `is_best`: strictly lower than every earlier validation loss.
    - patience: stop after `patience` evaluations in a row that did not beat the reference loss by
      more than `min_delta` (the reference only moves on such an improvement, as in Keras).
    - overfit: stop when the loss rises more than `overfit_threshold` (relative) above the best.
    """

    patience: int = 0
    min_delta: float = 0.0
    overfit_threshold: float | None = None
    best_loss: float | None = None
    best_step: int | None = None
    reference_loss: float | None = None
    evals_without_improvement: int = 0

    def update(self, step: int, val_loss: float) -> Verdict:
        if not math.isfinite(val_loss):
            return Verdict(False, f"validation loss is {val_loss} at step {step}")
        is_best = self.best_loss is None or val_loss < self.best_loss
        if is_best:
            self.best_loss, self.best_step = val_loss, step
        if self.reference_loss is None or val_loss < self.reference_loss - self.min_delta:
            self.reference_loss = val_loss
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        return Verdict(is_best, self._stop_reason(step, val_loss))

    def _stop_reason(self, step: int, val_loss: float) -> str | None:
        if self.patience and self.evals_without_improvement >= self.patience:
            return (
                f"no validation improvement larger than {self.min_delta:g} in {self.patience} evaluations "
                f"(best {self.best_loss:.4f} at step {self.best_step})"
            )
        threshold = self.overfit_threshold
        if threshold is not None and self.best_loss is not None and val_loss > self.best_loss * (1 + threshold):
            return (
                f"validation loss {val_loss:.4f} at step {step} is more than {threshold:.0%} above "
                f"its best {self.best_loss:.4f} (step {self.best_step}): overfitting"
            )
        return None

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> EarlyStopper:
        return cls(**state)

"""Loss and perplexity of a model on prepared data (a run's validation split), token-weighted.

One definition shared by what reports a model's quality outside training: the perplexity change of
a quantized export today, evaluation of any model and checkpoint later. The trainer's own validation
uses the same `summed_loss`, so the figures agree with the run's logged validation loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import runs
from .data.records import Split


@dataclass
class SplitLoss:
    loss: float  # mean cross-entropy per trained token
    tokens: int  # trained tokens it was averaged over

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))


def split_loss(model: Any, split: Split, batch_size: int = 4) -> SplitLoss:
    """Mean cross-entropy over every trained position of `split` (prompt and padding excluded)."""
    import mlx.core as mx

    from .training.loop import summed_loss

    total, count = mx.array(0.0), mx.array(0.0)
    for start in range(0, len(split), batch_size):
        rows = np.arange(start, min(start + batch_size, len(split)))
        tokens = split.tokens[rows]
        if split.mask is None:
            weights = np.ones((len(rows), tokens.shape[1] - 1), dtype=np.float32)
        else:
            weights = split.mask[rows, 1:].astype(np.float32)
        ce_sum, ntoks = summed_loss(model, mx.array(tokens), mx.array(weights))
        total, count = total + ce_sum, count + ntoks
        mx.eval(total, count)
    n = int(count.item())
    return SplitLoss(total.item() / max(n, 1), n)


def run_validation_split(run_dir: Path, tokenizer: Any) -> Split:
    """The validation split a run was evaluated on, rebuilt from its config (read from the data cache)."""
    from .data import prepare
    from .training.session import load_run_config

    return prepare(load_run_config(Path(run_dir)), tokenizer).val


def run_of_checkpoint(checkpoint: Path) -> Path:
    """The run folder a checkpoint folder belongs to (runs/<id>/checkpoints/<step>)."""
    run_dir = Path(checkpoint).resolve().parent.parent
    if not (run_dir / runs.CONFIG_FILE).is_file():
        from .errors import ForgeError

        raise ForgeError("this checkpoint is not inside a run folder", str(checkpoint), "pass a run's checkpoint")
    return run_dir

"""Checkpoints that are whole or absent, with retention and a `best` link.

A checkpoint is written into a temporary folder and renamed to `checkpoints/<step>/` in one step, so
a crash or full disk never leaves a half-written folder that resume or fuse would pick up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from ..atomic import atomic_folder
from ..errors import ForgeError
from ..runs import (
    OPTIMIZER_FILE,
    TRAINER_STATE_FILE,
    best_link,
    best_step,
    checkpoint_dir,
    checkpoint_steps,
    checkpoints_dir,
)
from .model_setup import load_adapter_weights, save_adapter


def save(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: optim.Optimizer,
    adapter_config: dict[str, Any],
    trainer_state: dict[str, Any],
) -> Path:
    """Write checkpoint `step` atomically; `trainer_state.json` goes in last as the completeness mark."""
    final = checkpoint_dir(run_dir, step)
    try:
        with atomic_folder(final, replace_marker=TRAINER_STATE_FILE) as tmp:
            save_adapter(model, tmp, adapter_config)
            mx.save_safetensors(str(tmp / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
            (tmp / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
    except (OSError, RuntimeError) as e:  # MLX reports a failed write (full disk) as RuntimeError
        reason = getattr(e, "strerror", None) or str(e)
        raise ForgeError(
            f"could not save checkpoint {step}: {reason}",
            str(final),
            "free disk space (the previous checkpoints are intact) and resume with `forgellm train --resume`",
        ) from e
    return final


def estimated_bytes(model: nn.Module, optimizer: optim.Optimizer) -> int:
    """Bytes one checkpoint takes: the trainable weights plus the (initialised) optimizer state."""
    arrays = [*tree_flatten(model.trainable_parameters()), *tree_flatten(optimizer.state)]
    return sum(v.nbytes for _, v in arrays if isinstance(v, mx.array))


def require_free_space(run_dir: Path, needed: int) -> None:
    """Fail before training when the run folder's disk cannot hold even one checkpoint."""
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise ForgeError(
            f"not enough disk space for a checkpoint: {needed / 1e6:,.1f} MB needed, {free / 1e6:,.1f} MB free",
            str(run_dir),
            "free disk space, set output_dir to a larger disk, or train fewer parameters (lora, lower num_layers)",
        )


def load(folder: Path, model: nn.Module, optimizer: optim.Optimizer) -> dict[str, Any]:
    """Restore weights and optimizer state; return the trainer state saved with them."""
    load_adapter_weights(model, folder)
    flat = mx.load(str(folder / OPTIMIZER_FILE))
    optimizer.state = tree_unflatten(list(flat.items()))
    return json.loads((folder / TRAINER_STATE_FILE).read_text())


def set_best(run_dir: Path, step: int) -> None:
    """Point `checkpoints/best` at `step` (relative symlink, replaced atomically)."""
    link = best_link(run_dir)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(str(step))
    os.replace(tmp, link)


def prune(run_dir: Path, keep_last: int) -> None:
    """Delete checkpoints beyond the last `keep_last`, never the best one; also stale temp folders."""
    root = checkpoints_dir(run_dir)
    steps = checkpoint_steps(run_dir)
    protected = set(steps[-keep_last:]) | {best_step(run_dir)}
    for step in steps:
        if step not in protected:
            # Renamed out of the way first (one atomic step), so a trainer killed mid-delete never
            # leaves a half-deleted folder that still looks like a complete checkpoint.
            doomed = root / f".{step}.del-{os.getpid()}"
            os.replace(root / str(step), doomed)
            shutil.rmtree(doomed, ignore_errors=True)
    for leftover in [*root.glob(".*.tmp-*"), *root.glob(".*.del-*")]:
        shutil.rmtree(leftover, ignore_errors=True)

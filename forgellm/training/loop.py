"""The training loop that runs inside the trainer subprocess.

Built on mlx-lm (model loading, LoRA/DoRA layers) with a loop of our own, because mlx-lm's `train()`
cannot resume exactly (no optimizer, RNG or data-position state), discards validation losses, and has
no early stopping, clipping or NaN guard. The compiled step mirrors mlx-lm's, so speed is the same.

Everything it reports goes through the run folder (see `forgellm.runs`).
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map

from .. import runs
from ..atomic import write_json, write_text
from ..config import TrainConfig
from ..errors import DataError, ForgeError
from ..metrics_reader import MetricsCache
from . import checkpoints
from .batches import BatchStream
from .early_stopping import EarlyStopper
from .model_setup import adapter_config, load_base, make_trainable, trainable_count
from .stopping import StopRequested


def summed_loss(model: nn.Module, tokens: mx.array, weights: mx.array) -> tuple[mx.array, mx.array]:
    """Cross-entropy summed over target positions whose weight is 1 (prompt and padding weigh 0), and
    how many positions that is. Callers divide by the count of a whole step or evaluation, never per batch."""
    logits = model(tokens[:, :-1])
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), tokens[:, 1:]) * weights
    return ce.sum(), weights.sum()


def scaled_loss(
    model: nn.Module, tokens: mx.array, weights: mx.array, scale: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    """The differentiated loss of one micro-batch: its summed cross-entropy times `scale` (see `_one_step`)."""
    ce_sum, ntoks = summed_loss(model, tokens, weights)
    return ce_sum * scale, ce_sum, ntoks


def build_optimizer(cfg: TrainConfig, total_steps: int) -> optim.Optimizer:
    """The optimizer with its schedule: step k (1-based) uses lr(k - 1), where lr(s) rises linearly from 0
    over `warmup_steps`, peaks at step warmup_steps + 1 and decays to `min_learning_rate` at the last step."""
    # MLX evaluates the schedule at the count of updates done so far (0 for step 1), so the last step,
    # total_steps, sees warmup_steps + decay_steps only if decay_steps ends one step before it.
    decay_steps = max(1, total_steps - cfg.warmup_steps - 1)
    if cfg.lr_schedule == "cosine":
        schedule = optim.cosine_decay(cfg.learning_rate, decay_steps, cfg.min_learning_rate)
    elif cfg.lr_schedule == "linear":
        schedule = optim.linear_schedule(cfg.learning_rate, cfg.min_learning_rate, decay_steps)
    else:
        schedule = lambda _step: mx.array(cfg.learning_rate)  # noqa: E731
    if cfg.warmup_steps:
        warmup = optim.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
        schedule = optim.join_schedules([warmup, schedule], [cfg.warmup_steps])
    # Bias correction on (MLX's default is off): without it the first few hundred updates are
    # mis-scaled and a small model trained from scratch reaches a given loss far later.
    if cfg.optimizer == "adamw":
        return optim.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay, bias_correction=True)
    if cfg.optimizer == "adam":
        return optim.Adam(learning_rate=schedule, bias_correction=True)
    return optim.SGD(learning_rate=schedule, weight_decay=cfg.weight_decay)


def total_steps_for(cfg: TrainConfig, train_rows: int) -> int:
    if cfg.epochs is None:
        return cfg.iters
    rows_per_step = cfg.batch_size * cfg.grad_accumulation_steps
    return max(1, math.ceil(cfg.epochs * train_rows / rows_per_step))


class Trainer:
    """One training run: set up from config + run folder, then `run()` until done, stopped or failed."""

    def __init__(
        self,
        cfg: TrainConfig,
        writer: runs.RunWriter,
        model: str | Path,
        resume: bool = False,
        stop: StopRequested | None = None,
    ):
        self.cfg = cfg
        self.run_dir = writer.run_dir
        self.model_path = model  # a name or folder; resolved in setup(), once Stop can be heard
        self.resume = resume
        self.world = mx.distributed.init()
        self.is_main = self.world.rank() == 0
        self.writer = writer
        if stop is None:  # the session installs one before any slow work; a bare Trainer does here
            stop = StopRequested()
            stop.install()
        self.stop = stop
        self.step = 0
        self._metric_columns = MetricsCache(max_runs=1)  # reads back what this run logged, incrementally
        self._metric_columns_offset = 0  # bytes of metrics.jsonl the column file written last covers
        stop.attach(writer, lambda: self.step)  # a Stop says which step it waits for, or ends after

    # ---- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        from ..data import prepare

        cfg = self.cfg
        np.random.seed(cfg.seed)
        from ..models.registry import resolve_model

        self.model_path = resolve_model(str(self.model_path))  # may build a built-in model: minutes
        self.model, self.tokenizer = load_base(self.model_path, cfg.trust_remote_code)
        # Seeded after the base is built and loaded (both draw random numbers), so adapter init and
        # dropout depend on the seed alone, not on whether this run had to build its model first.
        mx.random.seed(cfg.seed)
        try:
            prepared = prepare(cfg, self.tokenizer)
        except DataError as e:  # no usable data: what was read, and why each file was rejected, stays in the run
            if self.is_main and e.report:
                write_json(self.run_dir / runs.DATA_REPORT_FILE, e.report)
            raise
        self.train_split, self.val_split = prepared.train, prepared.val
        if self.is_main:
            write_json(self.run_dir / runs.DATA_REPORT_FILE, prepared.report)
            if prepared.chat_template:
                write_text(self.run_dir / runs.CHAT_TEMPLATE_FILE, prepared.chat_template)
        self._check_batch_fits()
        make_trainable(self.model, cfg)
        if cfg.grad_checkpoint:
            from mlx_lm.tuner.trainer import grad_checkpoint

            grad_checkpoint(self.model.layers[0])  # patches the block class: every block recomputes
        self.total_steps = total_steps_for(cfg, len(self.train_split.tokens))
        self.optimizer = build_optimizer(cfg, self.total_steps)
        self.optimizer.init(self.model.trainable_parameters())
        self.adapter_config = adapter_config(cfg, self.model_path)
        if self.is_main:
            checkpoints.require_free_space(self.run_dir, checkpoints.estimated_bytes(self.model, self.optimizer))
        self.batches = BatchStream(
            len(self.train_split.tokens), cfg.batch_size, cfg.seed, self.world.rank(), self.world.size()
        )
        self.stopper = EarlyStopper(
            cfg.early_stopping.patience, cfg.early_stopping.min_delta, cfg.early_stopping.overfit_threshold
        )
        self.step, self.trained_tokens = 0, 0
        if self.resume:
            self._restore_latest()
        self._compile_step()
        n_params = trainable_count(self.model)
        self.log(
            f"model {self.model_path} | {cfg.fine_tune_type} | trainable parameters {n_params:,} | "
            f"train rows {len(self.train_split.tokens)} x {self.train_split.tokens.shape[1] - 1} tokens | "
            f"val rows {len(self.val_split.tokens)} | steps {self.total_steps}"
        )
        # Every rank says it is there (rank 0 into train.log, the others to mlx.launch's output only).
        print(f"rank {self.world.rank()}/{self.world.size()} ready (pid {os.getpid()})", flush=True)

    def _check_batch_fits(self) -> None:
        rows = len(self.train_split.tokens)
        if rows < self.cfg.batch_size:
            raise ForgeError(
                f"batch_size {self.cfg.batch_size} is larger than the {rows} training windows the data makes",
                "batch_size",
                f"set batch_size <= {rows}, lower max_seq_length, or add data",
            )
        if self.cfg.batch_size % self.world.size():
            raise ForgeError(
                f"batch_size {self.cfg.batch_size} does not split evenly over {self.world.size()} hosts",
                "batch_size",
                f"use a multiple of {self.world.size()}",
            )

    def _restore_latest(self) -> None:
        steps = runs.checkpoint_steps(self.run_dir)
        if not steps:
            self.log("resume: no complete checkpoint yet; starting from step 0")
            if self.is_main:
                runs.truncate_metrics_after(self.run_dir, -1)  # step 0 is validated and logged again
            return
        folder = runs.checkpoint_dir(self.run_dir, steps[-1])
        state = checkpoints.load(folder, self.model, self.optimizer)
        self.step = state["step"]
        self.trained_tokens = state["trained_tokens"]
        self.batches.position = state["batch_position"]
        self.stopper = EarlyStopper.from_state(state["early_stopping"])
        high, low = state["rng_state"]
        mx.random.seed((int(high) << 32) | int(low))  # seeding with the 64-bit key restores it exactly
        self.writer.continue_from(state["elapsed_s"])
        if self.is_main:
            runs.truncate_metrics_after(self.run_dir, self.step)
            self._repair_best_link()
        self.log(f"resumed from checkpoint {self.step} ({folder})")

    def _repair_best_link(self) -> None:
        """Point `best` where the restored state says the best checkpoint is.

        A kill between writing a new best checkpoint and moving the link leaves `best` on an older one,
        and retention, which spares only the linked one, would later delete the true best.
        """
        best = self.stopper.best_step
        if best is None or runs.best_step(self.run_dir) == best:
            return
        if runs.is_complete_checkpoint(runs.checkpoint_dir(self.run_dir, best)):
            checkpoints.set_best(self.run_dir, best)
            self._status(best_step=best, best_val_loss=self.stopper.best_loss)
            self.log(f"resume: checkpoints/best now points at checkpoint {best}, the best by validation loss")

    def _compile_step(self) -> None:
        model, optimizer, cfg = self.model, self.optimizer, self.cfg
        loss_and_grad = nn.value_and_grad(model, scaled_loss)
        state = [model.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(tokens: mx.array, weights: mx.array, scale: mx.array, prev_grad: Any, do_update: bool):
            (_, ce_sum, ntoks), grad = loss_and_grad(model, tokens, weights, scale)
            if prev_grad is not None:
                grad = tree_map(mx.add, grad, prev_grad)
            grad_norm = mx.array(0.0)
            if do_update:
                grad = nn.average_gradients(grad)  # divides by the world size that `scale` multiplied in
                if cfg.max_grad_norm is not None:
                    grad, grad_norm = optim.clip_grad_norm(grad, cfg.max_grad_norm)
                optimizer.update(model, grad)
                grad = None
            return ce_sum, ntoks, grad, grad_norm

        self._step_fn = step
        self._state = state

    # ---- pieces of a step ------------------------------------------------------------------------

    def _batch(self, indices: np.ndarray, split) -> tuple[mx.array, mx.array]:
        tokens = split.tokens[indices]
        if split.mask is None:
            weights = np.ones((len(indices), tokens.shape[1] - 1), dtype=np.float32)
        else:
            weights = split.mask[indices, 1:].astype(np.float32)
        return mx.array(tokens), mx.array(weights)

    @staticmethod
    def _trained_positions(indices: np.ndarray, split) -> int:
        """Target positions with weight 1 in these rows (what `summed_loss` counts), from the host arrays."""
        if split.mask is None:
            return len(indices) * (split.tokens.shape[1] - 1)
        return int(split.mask[indices, 1:].sum())

    def evaluate(self) -> float:
        """Token-weighted mean validation loss over the whole set (or `val_batches` batches)."""
        self.model.eval()
        split, bs = self.val_split, self.cfg.batch_size
        n = len(split.tokens)
        starts = list(range(0, n, bs))
        if self.cfg.val_batches != -1:
            starts = starts[: self.cfg.val_batches]
        total, count = mx.array(0.0), mx.array(0.0)
        for start in starts:
            idx = np.arange(start, min(start + bs, n))[self.world.rank() :: self.world.size()]
            if len(idx) == 0:
                continue
            ce_sum, ntoks = summed_loss(self.model, *self._batch(idx, split))
            total, count = total + ce_sum, count + ntoks
            mx.eval(total, count)
        total = mx.distributed.all_sum(total, stream=mx.cpu)
        count = mx.distributed.all_sum(count, stream=mx.cpu)
        self.model.train()
        return (total / mx.maximum(count, 1)).item()

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)

    # ---- the loop --------------------------------------------------------------------------------

    def run(self) -> str:
        """Train to the end; returns the final state (completed, stopped, early_stopped)."""
        cfg = self.cfg
        self._status(state="running", total_steps=self.total_steps, world_size=self.world.size())
        if self.step == 0:
            self._validate(0)
        self.model.train()
        window_loss, window_tokens, window_time, window_steps = 0.0, 0, 0.0, 0
        stop_reason, final_state = None, "completed"
        while self.step < self.total_steps:
            tic = time.perf_counter()
            loss, ntoks, grad_norm = self._one_step()
            window_time += time.perf_counter() - tic
            self.step += 1
            self.stop.check_step(self.step)
            stopping = self.stop.agree(self.world)
            window_loss += loss
            window_tokens += ntoks
            window_steps += 1
            self.trained_tokens += ntoks
            if not math.isfinite(loss):
                self._status(step=self.step)
                raise ForgeError(
                    f"training loss became {loss} at step {self.step}",
                    str(self.run_dir),
                    f"lower learning_rate (now {cfg.learning_rate:g}) or set max_grad_norm; "
                    "the last good checkpoint is kept",
                )
            last = self.step == self.total_steps
            if self.step % cfg.steps_per_report == 0 or last or stopping:
                self._report(window_loss / window_steps, window_tokens / max(window_time, 1e-9), grad_norm)
                window_loss, window_tokens, window_time, window_steps = 0.0, 0, 0.0, 0
            verdict_stop = None
            if self.step % cfg.steps_per_eval == 0 or last:
                verdict_stop = self._validate(self.step)
            if self.step % cfg.save_every == 0 or last or stopping or verdict_stop:
                self._save(final=bool(last or stopping or verdict_stop))
            if verdict_stop:
                stop_reason, final_state = verdict_stop, "early_stopped"
                break
            if stopping:
                stop_reason, final_state = f"stopped by {self.stop.signal_name}", "stopped"
                break
        self._status(state=final_state, stop_reason=stop_reason, stopping_step=None, ended_at=runs.now_iso(), pid=None)
        self.log(f"{final_state} at step {self.step}" + (f": {stop_reason}" if stop_reason else ""))
        return final_state

    def _one_step(self) -> tuple[float, int, float]:
        """One optimizer update over `grad_accumulation_steps` micro-batches on every rank.

        The loss of a step is the mean over every trained position of the global batch. With prompt
        masking (IFT) micro-batches and ranks hold different numbers of trained positions, so each one's
        *summed* loss is divided by the whole step's count (known beforehand from the masks, the same on
        every rank) rather than averaging per-batch means: accumulation and ranks then give exactly the
        update of one process on one batch of the same rows. `average_gradients` divides by the world
        size, hence the factor in `scale`.
        """
        accum, split = self.cfg.grad_accumulation_steps, self.train_split
        global_rows = [self.batches.next_global() for _ in range(accum)]
        step_positions = sum(self._trained_positions(rows, split) for rows in global_rows)
        scale = mx.array(self.world.size() / max(step_positions, 1), dtype=mx.float32)
        grad, ce_total = None, mx.array(0.0)
        for micro, rows in enumerate(global_rows):
            tokens, weights = self._batch(self.batches.share(rows), split)
            ce_sum, _, grad, grad_norm = self._step_fn(tokens, weights, scale, grad, micro == accum - 1)
            ce_total = ce_total + ce_sum
            mx.eval(self._state, ce_total, grad)
        ce_total = mx.distributed.all_sum(ce_total, stream=mx.cpu)
        return ce_total.item() / max(step_positions, 1), step_positions, grad_norm.item()

    def _validate(self, step: int) -> str | None:
        """Evaluate once, log it once, update best checkpoint and early stopping."""
        if len(self.val_split.tokens) == 0:
            return None
        tic = time.perf_counter()
        val_loss = self.evaluate()
        record = runs.ValRecord(step, val_loss, _ppl(val_loss), val_time_s=round(time.perf_counter() - tic, 3))
        self._metrics(record)
        self.log(f"step {step}/{self.total_steps} | val loss {val_loss:.4f} | ppl {_ppl(val_loss):.2f}")
        if step == 0:  # the baseline before training: logged, not a checkpoint candidate
            return None
        if not math.isfinite(val_loss):
            raise ForgeError(
                f"validation loss became {val_loss} at step {step}", str(self.run_dir), "lower learning_rate"
            )
        verdict = self.stopper.update(step, val_loss)
        if verdict.is_best:
            self._save(is_best=True)
            self._status(best_step=step, best_val_loss=val_loss)
        return verdict.stop_reason

    def _save(self, is_best: bool = False, final: bool = False) -> None:
        """Checkpoint this step (once, however many reasons ask), then apply retention; `final`: the run
        ends with this checkpoint."""
        if not self.is_main:
            return
        if not runs.is_complete_checkpoint(runs.checkpoint_dir(self.run_dir, self.step)):
            self._write_checkpoint()
        if is_best:
            checkpoints.set_best(self.run_dir, self.step)
        checkpoints.prune(self.run_dir, self.cfg.keep_last)
        self._write_metric_columns(final)

    def _write_metric_columns(self, final: bool) -> None:
        """The column file (metrics_reader), so that a first look at a long run need not parse all of
        metrics.jsonl. Rewritten whole, so only once the lines it misses reach 1% of the file (256 KB at
        least), and when the run ends: readers parse about that much at most, and a million-report run does
        not rewrite 70 MB at every checkpoint. (A run that fails or is killed leaves the file of an
        earlier checkpoint: readers then parse more.)"""
        try:
            metrics = self.run_dir / runs.METRICS_FILE
            size = metrics.stat().st_size if metrics.exists() else 0
            if final or size - self._metric_columns_offset >= max(256 * 1024, size // 100):
                self._metric_columns_offset = self._metric_columns.write_column_file(self.run_dir)
        except Exception as e:  # noqa: BLE001 - derived data: a failure costs a first look some time, never the run
            reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
            self.log(f"warning: {runs.METRIC_COLUMNS_FILE} not written ({reason}): readers parse all metrics")

    def _write_checkpoint(self) -> None:
        state = {
            "step": self.step,
            "total_steps": self.total_steps,
            "trained_tokens": self.trained_tokens,
            "batch_position": self.batches.position,
            "epoch": self.batches.epoch_progress(),
            "early_stopping": self.stopper.state(),
            "rng_state": np.array(list(mx.random.state)[0]).tolist(),
            "elapsed_s": self.writer.elapsed(),
            "val_loss": self.stopper.best_loss if self.stopper.best_step == self.step else None,
        }
        tic = time.perf_counter()
        folder = checkpoints.save(self.run_dir, self.step, self.model, self.optimizer, self.adapter_config, state)
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        self.log(f"checkpoint {self.step} saved: {size / 1e6:,.1f} MB in {time.perf_counter() - tic:.2f}s")
        self._status(last_checkpoint=self.step)

    def _report(self, loss: float, tokens_per_sec: float, grad_norm: float) -> None:
        lr = float(self.optimizer.learning_rate.item())
        record = runs.TrainRecord(
            step=self.step,
            loss=loss,
            lr=lr,
            tokens_per_sec=round(tokens_per_sec, 1),
            trained_tokens=self.trained_tokens,
            peak_memory_gb=round(mx.get_peak_memory() / 1e9, 4),
            epoch=round(self.batches.epoch_progress(), 4),
            grad_norm=grad_norm if self.cfg.max_grad_norm is not None else None,
        )
        self._metrics(record)
        elapsed = self.writer.elapsed()
        eta = elapsed / max(self.step, 1) * (self.total_steps - self.step)
        self._status(step=self.step, epoch=record.epoch, tokens_per_sec=record.tokens_per_sec, eta_s=round(eta, 1))
        self.log(
            f"step {self.step}/{self.total_steps} | train loss {loss:.4f} | lr {lr:.2e} | "
            f"{tokens_per_sec:,.0f} tok/s | peak {record.peak_memory_gb:.2f} GB"
        )

    def _metrics(self, record: runs.MetricRecord) -> None:
        if self.is_main:
            self.writer.log_metrics(record)

    def _status(self, **changes: Any) -> None:
        if self.is_main:
            self.writer.set_status(**changes)


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0)) if math.isfinite(loss) else float("inf")


def fail(writer: runs.RunWriter, error: BaseException) -> None:
    """Record a failure: one-line cause in status.json; in train.log (stderr) the message of a user's mistake
    (a ForgeError says what, where and how to fix), the traceback of anything else."""
    if isinstance(error, ForgeError):
        print(f"error: {error.message}", file=sys.stderr, flush=True)
    else:
        traceback.print_exception(error)
    message = error.message if isinstance(error, ForgeError) else f"{type(error).__name__}: {error}"
    writer.set_status(
        state="failed",
        error=message.splitlines()[0] if message else type(error).__name__,
        error_detail=message,
        stopping_step=None,
        ended_at=runs.now_iso(),
        pid=None,
    )

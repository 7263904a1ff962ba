"""mlx-lm's own training step, set up in this process as `mlx_lm lora` sets it up (shared by the in-process benchmarks).

`step_ab_bench.py` and `useful_tokens_bench.py` time ForgeLLM's `Trainer._one_step()` beside this step on a
second copy of the model. Everything here is mlx-lm 0.32's code path, repeated only where mlx-lm keeps
it inside a function that also runs the whole loop (`mlx_lm.lora.train_model`, `mlx_lm.tuner.trainer.train`):

- `trainable_model`: `mlx_lm.load`, then `model.freeze()` and either its full fine-tuning unfreeze
  (`model.layers[-max(num_layers, 0):]`, the blocks only) or `linear_to_lora_layers`, as `train_model` does;
- `adam`: the optimizer both sides get. ForgeLLM always turns Adam's bias correction on (see
  `forgellm.training.loop.build_optimizer`); MLX's default is off, so the peer gets `bias_correction=True`
  (what `optimizer_config: {adam: {bias_correction: true}}` gives `mlx_lm lora`), else the two sides
  would run different update rules;
- `blas_line`: which BLAS this process's MLX uses, for the benchmark's output (importing this module
  first loads OpenBLAS, as every ForgeLLM process does; an `import mlx.core` before it would keep MLX's
  reference BLAS, 31.7x slower at matmul, on both sides);
- `compiled_step`: the step of `train()`: value_and_grad of `default_loss`, gradient accumulation,
  `average_gradients`, the optimizer update, compiled with the model, optimizer and random state, then
  one `mx.eval` of that state, the loss and the token count per step, as `train()` does every step.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import forgellm  # noqa: E402,F401  (loads OpenBLAS into MLX; after mlx.core it could not, see forgellm/platform.py)

# isort: split
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

LORA = {"rank": 8, "scale": 20.0, "dropout": 0.0}
LEARNING_RATE = 1e-4


def blas_line() -> str:
    from forgellm.platform import ensure_fast_blas

    state = ensure_fast_blas()
    return f"MLX BLAS: {state.name} ({state.library or 'bundled'})"


def trainable_model(model_path: Path, fine_tune_type: str, num_layers: int, lora: dict | None = None):
    """The model and tokenizer, made trainable the way `mlx_lm lora` does (full = the last num_layers blocks)."""
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, tokenizer = load(str(model_path))
    model.freeze()
    if fine_tune_type == "full":
        for layer in model.layers[-max(num_layers, 0) :]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(model, num_layers, lora or LORA, use_dora=fine_tune_type == "dora")
    model.train()
    return model, tokenizer


def adam(learning_rate: float = LEARNING_RATE) -> optim.Optimizer:
    """Adam with bias correction: the update rule ForgeLLM's `optimizer: adam` uses."""
    return optim.Adam(learning_rate=learning_rate, bias_correction=True)


def compiled_step(model: nn.Module, optimizer: optim.Optimizer) -> Callable[[mx.array, mx.array], float]:
    """One update of `mlx_lm.tuner.trainer.train` on a (tokens, lengths) batch; returns the step's loss."""
    from mlx_lm.tuner.trainer import average_gradients, default_loss

    state = [model.state, optimizer.state, mx.random.state]
    loss_and_grad = nn.value_and_grad(model, default_loss)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, prev_grad, do_update):
        (lvalue, toks), grad = loss_and_grad(model, *batch)
        if prev_grad is not None:
            grad = tree_map(lambda x, y: x + y, grad, prev_grad)
        if do_update:
            grad = average_gradients(grad)
            optimizer.update(model, grad)
            grad = None
        return lvalue, toks, grad

    def one_step(tokens: mx.array, lengths: mx.array) -> float:
        lvalue, toks, _ = step((tokens, lengths), None, True)
        mx.eval(state, lvalue, toks)
        return lvalue.item()

    return one_step

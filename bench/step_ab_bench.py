"""Training step time, ForgeLLM vs mlx-lm, measured in one process in alternating blocks.

    python bench/step_ab_bench.py                                   # tiny: lora and full, 4 x 256
    python bench/step_ab_bench.py --model smollm2-135m-instruct --blocks 8 --steps-per-block 3

Why in one process: on a shared 2-core machine the speed drifts by 5-10% from one minute to the next,
which is as large as the differences to measure; separate runs minutes apart (train_bench.py) cannot
resolve 2%. Here both steps run in the same process on the same model weights' shape and the same
token windows, alternating blocks of --steps-per-block steps (ABBA order), so drift hits both alike;
the ratio is the median over blocks of mlx-lm's block time / ForgeLLM's.

ForgeLLM side: the real `Trainer` (set up from a config exactly as `forgellm train` does, run folder
included) and its `_one_step()` (batch from the packed split, the compiled step, the eval, the loss /
token / grad-norm readback). mlx-lm side: a second copy of the model made trainable with mlx-lm's own
`linear_to_lora_layers` (or its full fine-tuning unfreeze), mlx-lm's `default_loss`, `Adam` with its
defaults, and the step of `mlx_lm.tuner.trainer.train` (mlx-lm 0.32): value_and_grad, gradient
averaging, optimizer update, compiled with the model, optimizer and random state, then one `mx.eval`
of that state, the loss and the token count per step. The train loop around it (reporting every
steps_per_report, validation, saving) is not timed on either side; train_bench.py times whole runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FORGELLM_HOME", "/tmp/bench_home")

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_map  # noqa: E402

import forgellm  # noqa: E402,F401  (loads OpenBLAS for MLX before mlx.core)


def forgellm_step(model_path: Path, cfg_dict: dict, run_root: Path):
    from forgellm import runs
    from forgellm.config import from_dict
    from forgellm.training.loop import Trainer

    cfg = from_dict({**cfg_dict, "output_dir": str(run_root), "run_name": "ab"})
    run_dir = run_root / "ab"
    run_dir.mkdir(parents=True)
    trainer = Trainer(cfg, runs.RunWriter(run_dir), model_path)
    trainer.setup()
    trainer.model.train()
    return trainer, trainer._one_step


def mlx_lm_step(model_path: Path, fine_tune_type: str, num_layers: int, rows: np.ndarray, batch: int, seed: int = 0):
    from mlx_lm import load
    from mlx_lm.tuner.trainer import default_loss
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(str(model_path))
    model.freeze()
    if fine_tune_type == "full":
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(model, num_layers, {"rank": 8, "scale": 20.0, "dropout": 0.0})
    model.train()
    optimizer = optim.Adam(learning_rate=1e-4)
    state = [model.state, optimizer.state, mx.random.state]
    loss_and_grad = nn.value_and_grad(model, default_loss)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, lengths, prev_grad, do_update):
        (loss, ntoks), grad = loss_and_grad(model, tokens, lengths)
        if prev_grad is not None:
            grad = tree_map(lambda x, y: x + y, grad, prev_grad)
        if do_update:
            grad = nn.average_gradients(grad)
            optimizer.update(model, grad)
            grad = None
        return loss, ntoks, grad

    rng = np.random.default_rng(seed)
    width = rows.shape[1] - 1
    lengths = mx.array(np.stack([np.zeros(batch, np.int32), np.full(batch, width, np.int32)], axis=1))

    def one_step() -> float:
        tokens = mx.array(rows[rng.choice(len(rows), batch, replace=False)])
        loss, ntoks, _ = step(tokens, lengths, None, True)
        mx.eval(state, loss, ntoks)
        return loss.item()

    return one_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="built-in name (built under $FORGELLM_HOME) or a folder")
    ap.add_argument("--cases", default="lora,full", help="comma list of lora, full (full = blocks only, as mlx-lm)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=12, help="timed blocks per tool")
    ap.add_argument("--steps-per-block", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per tool first (compilation)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from forgellm.models.registry import resolve_model

    model_path = Path(args.model) if Path(args.model).is_dir() else resolve_model(args.model)
    layers = json.loads((model_path / "config.json").read_text())["num_hidden_layers"]
    results = []
    for case in args.cases.split(","):
        cfg = {
            "model": str(model_path),
            "data": str(ROOT / "dataset" / "beekeeping"),
            "train_type": "cpt",
            "fine_tune_type": case,
            "num_layers": layers,
            "batch_size": args.batch,
            "iters": 1_000_000,
            "max_seq_length": args.seq,
            "optimizer": "adam",
            "lr_schedule": "constant",
            "learning_rate": 1e-4,
            "warmup_steps": 0,
            "max_grad_norm": None,
            "grad_accumulation_steps": 1,
            "steps_per_eval": 1_000_000,
            "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0},
            "seed": 0,
        }
        with tempfile.TemporaryDirectory(prefix="forgellm-ab-") as tmp:
            trainer, ours = forgellm_step(model_path, cfg, Path(tmp))
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
        f, m = np.array(times["forgellm"]), np.array(times["mlx-lm"])
        ratios = m / f
        row = {
            "model": model_path.name,
            "case": case,
            "batch": args.batch,
            "seq": args.seq,
            "forgellm_step_ms": 1000 * float(np.median(f)),
            "mlx_lm_step_ms": 1000 * float(np.median(m)),
            "tokens_per_s_ratio_median": float(np.median(ratios)),
            "ratio_q25": float(np.quantile(ratios, 0.25)),
            "ratio_q75": float(np.quantile(ratios, 0.75)),
            "ratio_of_totals": float(m.sum() / f.sum()),
            "blocks": args.blocks,
            "steps_per_block": args.steps_per_block,
            "load1_end": round(os.getloadavg()[0], 2),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| model | case | batch x seq | ForgeLLM ms/step | mlx-lm ms/step "
        "| tokens/s ratio (median, IQR) | ratio of totals |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['case']} | {r['batch']} x {r['seq']} | "
            f"{r['forgellm_step_ms']:.1f} | {r['mlx_lm_step_ms']:.1f} | "
            f"{r['tokens_per_s_ratio_median']:.3f} ({r['ratio_q25']:.3f}-{r['ratio_q75']:.3f}) | "
            f"{r['ratio_of_totals']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

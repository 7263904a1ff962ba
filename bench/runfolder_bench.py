"""What the trainer's run-folder writing costs, as a share of a tiny-model training step.

    python bench/runfolder_bench.py [--calls 2000] [--blocks 5] [--steps 40] [--warmup 5] [--json FILE]

Every `steps_per_report` steps the trainer (`Trainer._report`) appends one `TrainRecord` line to
metrics.jsonl (`RunWriter.log_metrics`: open, one write, close) and rewrites status.json
(`RunWriter.set_status` -> `forgellm.atomic.write_json`: temp file, fsync, rename). This script:

1. Micro-benchmark. In a fresh run folder under the bench home's runs/ (the same disk as the
   project's runs/: the home is a temporary folder under `forgellm.paths.cache_dir()`), `--blocks`
   blocks of `--calls` reports each, exactly as `_report` makes them: `log_metrics(TrainRecord(...))`
   then `set_status(step=, epoch=, tokens_per_sec=, eta_s=)`. Each call is timed on its own
   (`time.perf_counter`); it prints the mean, median, p90 and max microseconds per call over all
   calls, and the range of the per-block medians.
2. A real run. `python -m forgellm train configs/cpt-tiny.yaml --set iters=STEPS --set
   steps_per_report=1` in a child process with FORGELLM_HOME set to the bench home (the tiny model is
   built there first), so every step writes both files. The child wraps the two RunWriter methods
   with a timer (calling the originals unchanged), so the writes are also timed in situ, interleaved
   with real training (the reports of steps after the warm-up and before the last step). From
   metrics.jsonl, skipping the first `--warmup` steps (compilation): the median step compute time
   (trained tokens of the step / its tokens_per_sec: `_one_step()` alone, as the trainer times it)
   and the median wall interval between consecutive records (`elapsed_s`: the step plus its report
   and log line).
3. The write cost per training step at the default `steps_per_report: 10` (one report per 10 steps)
   and at the worst case, `steps_per_report: 1`, as a percentage of the median step compute time,
   from the mean, median and p90 per-report cost of the micro-benchmark and of the in-situ timings.
   The mean is the cost per step (total write time / steps) and gives the verdict; fsync has a long
   tail, so a slow report delays its own step more than the mean says (the p90 rows show by how much).

Waits (like the other training benchmarks) for a 1-minute load average below --max-load first. The
bench home is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgellm import paths, runs  # noqa: E402

# The child trainer: `python -m forgellm train ...` with the two RunWriter methods timed in situ.
CHILD = r"""
import json, os, sys, time
from forgellm import runs
times = {"set_status": [], "log_metrics": []}  # [step, seconds] per call
def timed(name, fn):
    def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            step = args[0].step if name == "log_metrics" else self.status.step
            times[name].append([step, time.perf_counter() - t0])
    return wrapper
runs.RunWriter.set_status = timed("set_status", runs.RunWriter.set_status)
runs.RunWriter.log_metrics = timed("log_metrics", runs.RunWriter.log_metrics)
from forgellm.cli import main
rc = main(sys.argv[1:])
with open(os.environ["RUNFOLDER_BENCH_TIMES"], "w") as f:
    json.dump(times, f)
sys.exit(rc)
"""


def wait_for_quiet(max_load: float, max_wait: float, poll: float = 10.0) -> float:
    start = time.monotonic()
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() - start < max_wait:
        time.sleep(poll)
        load = os.getloadavg()[0]
    return load


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def summary(values: list[float], blocks: list[list[float]] | None = None) -> dict:
    out = {"n": len(values), "mean_us": statistics.fmean(values) * 1e6, "median_us": statistics.median(values) * 1e6,
           "p90_us": p90(values) * 1e6, "max_us": max(values) * 1e6}  # fmt: skip
    if blocks:
        medians = [statistics.median(b) * 1e6 for b in blocks]
        out["block_medians_us"] = [round(m, 1) for m in medians]
    return out


# ------------------------------------------------------------------------------------------------
# 1. Micro-benchmark


def micro(run_dir: Path, calls: int, blocks: int) -> dict:
    """`blocks` x `calls` reports as Trainer._report makes them, each call timed on its own."""
    status = runs.RunStatus(state="running", pid=os.getpid(), total_steps=blocks * calls, started_at=runs.now_iso(),
                            model=str(paths.models_dir() / "tiny"), train_type="cpt", fine_tune_type="full",
                            best_step=50, best_val_loss=5.4321, last_checkpoint=100)  # fmt: skip
    writer = runs.RunWriter(run_dir, status)
    writer.set_status()  # status.json exists before the first timed call, as in a real run
    per = {"log_metrics": [], "set_status": [], "report": []}
    per_block = {k: [] for k in per}
    step = 0
    for _ in range(blocks):
        block = {k: [] for k in per}
        for _ in range(calls):
            step += 1
            record = runs.TrainRecord(step=step, loss=3.14159 + step * 1e-6, lr=2.9e-3, tokens_per_sec=3456.7,
                                      trained_tokens=step * 1024, peak_memory_gb=0.1234, epoch=round(step / 78, 4),
                                      grad_norm=0.987654)  # fmt: skip
            t0 = time.perf_counter()
            writer.log_metrics(record)
            t1 = time.perf_counter()
            writer.set_status(step=step, epoch=record.epoch, tokens_per_sec=record.tokens_per_sec, eta_s=123.4)
            t2 = time.perf_counter()
            block["log_metrics"].append(t1 - t0)
            block["set_status"].append(t2 - t1)
            block["report"].append(t2 - t0)
        for k in per:
            per[k] += block[k]
            per_block[k].append(block[k])
    lines = len((run_dir / runs.METRICS_FILE).read_text(encoding="utf-8").splitlines())
    assert lines == blocks * calls, f"metrics.jsonl has {lines} lines, expected {blocks * calls}"
    assert runs.read_status(run_dir).step == step
    return {k: summary(per[k], per_block[k]) for k in per}


# ------------------------------------------------------------------------------------------------
# 2. A real short training run


def train_run(home: Path, config: str, steps: int, warmup: int) -> dict:
    env = {**os.environ, "FORGELLM_HOME": str(home), "PYTHONPATH": str(ROOT),
           "RUNFOLDER_BENCH_TIMES": str(home / "insitu_times.json")}  # fmt: skip
    subprocess.run([sys.executable, "-m", "forgellm", "tiny"], check=True, env=env, cwd=ROOT, capture_output=True)
    argv = [sys.executable, "-c", CHILD, "train", config, "--set", f"iters={steps}", "--set", "steps_per_report=1"]
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"training run failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    run_dir = Path(out.stdout.splitlines()[0])
    train = [r for r in runs.read_metrics(run_dir) if isinstance(r, runs.TrainRecord)]
    assert [r.step for r in train] == list(range(1, steps + 1)), "expected one train record per step"
    compute, interval = [], []
    for prev, rec in zip(train, train[1:], strict=False):
        if rec.step <= warmup:
            continue
        compute.append((rec.trained_tokens - prev.trained_tokens) / rec.tokens_per_sec)
        interval.append(rec.elapsed_s - prev.elapsed_s)
    # In-situ writes of the steady-state steps (not the start, the warm-up, or the last step's
    # validation and checkpoint, which add status writes of their own).
    insitu = {name: [t for step, t in calls if warmup < step < steps]
              for name, calls in json.loads((home / "insitu_times.json").read_text()).items()}  # fmt: skip
    return {
        "run_dir": str(run_dir), "wall_s": wall, "steps": steps, "warmup": warmup, "steps_used": len(compute),
        "step_compute_s": {"median": statistics.median(compute), "p90": p90(compute), "min": min(compute)},
        "step_interval_s": {"median": statistics.median(interval), "p90": p90(interval)},
        "tokens_per_step": train[-1].trained_tokens // steps,
        "insitu": {k: summary(v) for k, v in insitu.items()},
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="reports per micro-benchmark block")
    ap.add_argument("--blocks", type=int, default=5, help="micro-benchmark blocks")
    ap.add_argument("--config", default="configs/cpt-tiny.yaml")
    ap.add_argument("--steps", type=int, default=40, help="training steps of the real run (steps_per_report=1)")
    ap.add_argument("--warmup", type=int, default=5, help="first steps left out of the step time (compilation)")
    ap.add_argument("--max-load", type=float, default=0.8)
    ap.add_argument("--max-wait", type=float, default=600.0)
    ap.add_argument("--keep", action="store_true", help="keep the bench home (runs, built tiny model)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args()

    paths.cache_dir().mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="runfolder-bench-", dir=paths.cache_dir()))
    try:
        load = wait_for_quiet(args.max_load, args.max_wait)
        run_dir = runs.create_run_dir(home / "runs", "writes-micro", "writes-micro")
        fs = subprocess.run(["df", "--output=source,fstype", str(run_dir)], capture_output=True, text=True).stdout
        fs = " ".join(fs.split()[2:]) or "?"
        print(f"bench home {home} ({fs}); {os.cpu_count()} cores; load average before: {load:.2f}\n")
        mic = micro(run_dir, args.calls, args.blocks)
        load_micro_after = os.getloadavg()[0]
        load_train = wait_for_quiet(args.max_load, args.max_wait)
        real = train_run(home, args.config, args.steps, args.warmup)
        load_after = os.getloadavg()[0]
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(home, ignore_errors=True)

    print(
        f"Micro-benchmark: {args.blocks} blocks x {args.calls} reports (log_metrics then set_status); "
        f"load average after: {load_micro_after:.2f}\n"
    )
    print("| call | mean µs | median µs | p90 µs | max µs | block medians µs |")
    print("|---|---|---|---|---|---|")
    labels = {"set_status": "`set_status` (status.json, fsync + rename)",
              "log_metrics": "`log_metrics` (one metrics.jsonl line)", "report": "one report (both)"}  # fmt: skip
    for k, label in labels.items():
        s = mic[k]
        print(f"| {label} | {s['mean_us']:,.0f} | {s['median_us']:,.0f} | {s['p90_us']:,.0f} | {s['max_us']:,.0f} | "
              f"{min(s['block_medians_us']):,.0f}-{max(s['block_medians_us']):,.0f} |")  # fmt: skip
    ins = real["insitu"]
    print(f"\nReal run: {args.config}, {args.steps} steps, steps_per_report=1, steps {args.warmup + 1}-{args.steps} "
          f"used; {real['tokens_per_step']} tokens/step; load average before / after: {load_train:.2f} / "
          f"{load_after:.2f}; wall {real['wall_s']:.0f} s\n")  # fmt: skip
    print(
        "| step compute (median) | step compute (p90) | record-to-record interval (median) "
        "| in-situ set_status mean / median / p90 µs | in-situ log_metrics mean / median / p90 µs |"
    )
    print("|---|---|---|---|---|")
    sc, si = real["step_compute_s"], real["step_interval_s"]
    print(f"| {sc['median'] * 1e3:.1f} ms | {sc['p90'] * 1e3:.1f} ms | {si['median'] * 1e3:.1f} ms | "
          + " | ".join(f"{ins[k]['mean_us']:,.0f} / {ins[k]['median_us']:,.0f} / {ins[k]['p90_us']:,.0f} "
                       f"(n={ins[k]['n']})" for k in ("set_status", "log_metrics")) + " |")  # fmt: skip

    step_us = sc["median"] * 1e6
    # The mean is the cost per step (total write time / steps); median and p90 show the spread (fsync
    # has a long tail: a slow report delays its own step, it does not slow training on average).
    cost = {}
    for stat in ("mean", "median", "p90"):
        cost[f"micro {stat}"] = mic["report"][f"{stat}_us"]
    for stat in ("mean", "median", "p90"):
        cost[f"in-situ {stat}"] = ins["set_status"][f"{stat}_us"] + ins["log_metrics"][f"{stat}_us"]
    print(f"\nWrite cost per training step, as a share of the median step compute time ({sc['median'] * 1e3:.1f} ms)\n")
    print(
        "| per-report cost from | µs per report | steps_per_report 10 (default) "
        "| steps_per_report 1 (worst case) | under 1%? |"
    )
    print("|---|---|---|---|---|")
    shares = {}
    for label, us in cost.items():
        s10, s1 = us / 10 / step_us, us / step_us
        shares[label] = {"report_us": us, "share_spr10": s10, "share_spr1": s1}
        verdict = "both" if s1 < 0.01 else ("default only" if s10 < 0.01 else "neither")
        print(f"| {label} | {us:,.0f} | {s10:.3%} | {s1:.3%} | {verdict} |")
    print()
    for spr, key in ((10, "share_spr10"), (1, "share_spr1")):
        worst = max(shares["micro mean"][key], shares["in-situ mean"][key])
        print(
            f"steps_per_report {spr}: mean write cost {worst:.3%} of a step (the larger of micro and in-situ): "
            + ("under 1%." if worst < 0.01 else "NOT under 1%.")
        )

    if args.json:
        loads = {"before": load, "after_micro": load_micro_after, "before_train": load_train, "after_train": load_after}
        figures = {"args": {k: str(v) for k, v in vars(args).items()}, "load1": loads, "micro": mic, "real": real,
                   "shares": shares}  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

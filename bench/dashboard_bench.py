"""Dashboard refresh time and memory on a long run: 100,000 training reports and a validation every 100.

    python bench/dashboard_bench.py [--rows 100000] [--appends 50] [--rss-refreshes 2000] [--json FILE]

1. Builds a run folder in a temporary folder: metrics.jsonl with `--rows` train records (one per step, all
   fields a trainer writes) and a val record every 100 steps, status.json (running: this process, so the
   ETA card is live), config.yaml and three checkpoints.
2. Cold: the first `dashboard.refresh` of that run with a new `MetricsCache` (it reads the whole file),
   after one refresh of a small run so that plotly's one-off set-up in a new process is not counted.
   Reported whole and split into reading (`MetricsCache.columns`) and building (cards, health, the four
   figures, top checkpoints). Then as the app does: `MetricsCache.warm` at start reads the newest runs on
   a background thread, and the first refresh after it.
3. Steady state: `--appends` times, append 100 rows (as a trainer would between two refreshes) and time
   one refresh; separately, `to_json()` of its four figures (what Gradio serialises and sends).
4. Memory: `--rss-refreshes` refreshes, each after appending one train row (and a val row every 100), with
   the resident set size (RSS) before, at every quarter and after. The goal: flat, apart from the rows added.

Goal: one steady-state refresh in at most 200 ms. Waits for a 1-minute load average below --max-load first.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgellm import dashboard, metrics_reader, procs, runs  # noqa: E402

GOAL_MS = 200.0


class FakeTrainer:
    """Appends metrics lines the way `RunWriter.log_metrics` does, one report per step."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / runs.METRICS_FILE
        self.step = 0
        self.column_writer = metrics_reader.MetricsCache(max_runs=1)  # as the trainer keeps for its checkpoints

    def append(self, rows: int) -> None:
        lines = []
        for _ in range(rows):
            self.step += 1
            s = self.step
            loss = 2.0 + 1 / math.sqrt(s) + 0.02 * math.sin(s * 1.7)
            train = {
                "step": s,
                "split": "train",
                "loss": loss,
                "lr": 1e-4 * min(1.0, s / 1000),
                "tokens_per_sec": 1000.0 + 10 * math.sin(s),
                "trained_tokens": s * 512,
                "peak_memory_gb": 1.5,
                "epoch": s / 5000,
                "elapsed_s": s * 0.2,
            }
            lines.append(json.dumps(train) + "\n")
            if s % 100 == 0:
                val = {"step": s, "split": "val", "loss": loss + 0.1, "ppl": math.exp(loss + 0.1), "elapsed_s": s * 0.2}
                lines.append(json.dumps(val) + "\n")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(lines))


def make_run(run_dir: Path, rows: int) -> FakeTrainer:
    run_dir.mkdir(parents=True)
    status = runs.RunStatus(
        state="running",
        pid=os.getpid(),
        pid_start=procs.process_start_time(os.getpid()),
        step=rows,
        total_steps=rows * 2,
        eta_s=3600.0,
    )
    runs.write_status(run_dir, status)
    (run_dir / runs.CONFIG_FILE).write_text("model: tiny\nlearning_rate: 0.0001\n")
    for step in sorted({rows // 2, rows - 100, rows}):
        folder = runs.checkpoint_dir(run_dir, step)
        folder.mkdir(parents=True)
        (folder / runs.TRAINER_STATE_FILE).write_text("{}")
    trainer = FakeTrainer(run_dir)
    trainer.append(rows - 100)
    trainer.column_writer.write_column_file(run_dir)  # the last checkpoint, 100 steps ago
    trainer.append(100)
    return trainer


def rss_mb() -> float:
    """Resident set size now (Linux: /proc); elsewhere the peak so far (ru_maxrss)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def timed_ms(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return (time.perf_counter() - t0) * 1000, result


def figures_json_ms(board: dashboard.Dashboard) -> float:
    ms, _ = timed_ms(
        lambda: [f.to_json() for f in (board.loss, board.perplexity, board.learning_rate, board.throughput)]
    )
    return ms


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median": statistics.median(values),
        "p90": ordered[int(0.9 * (len(ordered) - 1))],
        "max": ordered[-1],
        "n": len(values),
    }


def cold_refresh(run_dir: Path, cache: metrics_reader.MetricsCache | None = None) -> dict:
    """The first refresh of a run in a new cache, then the same again in two parts: reading, building."""
    cold_ms, _ = timed_ms(lambda: dashboard.refresh(run_dir, cache or metrics_reader.MetricsCache()))
    split = metrics_reader.MetricsCache()
    read_ms, _ = timed_ms(lambda: split.columns(run_dir))
    build_ms, _ = timed_ms(lambda: dashboard.refresh(run_dir, split))  # nothing new to read: building only
    return {"refresh_ms": cold_ms, "read_ms": read_ms, "build_ms": build_ms}


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    start = time.monotonic()
    while os.getloadavg()[0] >= max_load and time.monotonic() - start < max_wait:
        time.sleep(10)
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="training reports in the run (one per step)")
    ap.add_argument("--appends", type=int, default=50, help="steady-state refreshes, each after 100 new rows")
    ap.add_argument("--rss-refreshes", type=int, default=2000, help="refreshes of the memory check")
    ap.add_argument("--max-load", type=float, default=1.0)
    ap.add_argument("--max-wait", type=float, default=300.0)
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args()

    results: dict = {"rows": args.rows, "goal_ms": GOAL_MS}
    with tempfile.TemporaryDirectory(prefix="dashboard_bench-") as tmp:
        small = make_run(Path(tmp) / "small", 200)
        dashboard.refresh(small.path.parent)  # plotly's first-figure set-up, once per process: not a refresh cost
        trainer = make_run(Path(tmp) / "long", args.rows)
        run_dir = trainer.path.parent
        results["metrics_mb"] = trainer.path.stat().st_size / 2**20
        results["load_before"] = wait_for_quiet(args.max_load, args.max_wait)

        column_file = run_dir / runs.METRIC_COLUMNS_FILE
        results["column_file_mb"] = column_file.stat().st_size / 2**20
        hidden = column_file.with_name("hidden.npz")
        column_file.rename(hidden)  # first as a run without one (older version, killed before a checkpoint)
        gc.collect()
        results["rss_before_cold_mb"] = rss_mb()
        results["cold_without_column_file"] = cold_refresh(run_dir)
        hidden.rename(column_file)
        gc.collect()
        cache = metrics_reader.MetricsCache()
        results["cold"] = cold_refresh(run_dir, cache)
        results["rss_after_cold_mb"] = rss_mb()
        trainer.append(100)  # the next checkpoint: what writing the column file costs the trainer
        results["trainer_column_file_write_ms"], _ = timed_ms(lambda: trainer.column_writer.write_column_file(run_dir))
        gc.collect()

        refresh_ms, json_ms = [], []
        for _ in range(args.appends):
            trainer.append(100)
            ms, board = timed_ms(lambda: dashboard.refresh(run_dir, cache))
            refresh_ms.append(ms)
            json_ms.append(figures_json_ms(board))
        results["steady_refresh_ms"] = summary(refresh_ms)
        results["steady_figures_to_json_ms"] = summary(json_ms)
        results["warnings"] = [w.kind for w in board.warnings]

        gc.collect()
        rss = [(0, rss_mb())]
        for i in range(1, args.rss_refreshes + 1):
            trainer.append(1)
            dashboard.refresh(run_dir, cache)
            if i % max(1, args.rss_refreshes // 4) == 0:
                gc.collect()
                rss.append((i, rss_mb()))
        results["rss_mb_by_refresh"] = rss
        results["rows_at_end"] = trainer.step

    print(f"run: {args.rows:,} train rows + {args.rows // 100:,} val rows ({results['metrics_mb']:.1f} MB)")
    print(f"load average before timing: {results['load_before']:.2f}")
    for key, what in (
        ("cold", f"with the trainer's column file ({results['column_file_mb']:.1f} MB, 100 rows behind)"),
        ("cold_without_column_file", "without a column file (every line parsed)"),
    ):
        cold = results[key]
        print(
            f"first refresh in a new cache, {what}: {cold['refresh_ms']:.0f} ms "
            f"(again in parts: read {cold['read_ms']:.0f} + build {cold['build_ms']:.0f})"
        )
    write_ms = results["trainer_column_file_write_ms"]
    print(f"the trainer writing the column file at a checkpoint 100 rows later: {write_ms:.0f} ms")
    steady = results["steady_refresh_ms"]
    print(
        f"steady refresh (+100 rows each, n={steady['n']}): median {steady['median']:.1f} ms, "
        f"p90 {steady['p90']:.1f}, max {steady['max']:.1f}  (goal <= {GOAL_MS:.0f} ms: "
        f"{'met' if steady['p90'] <= GOAL_MS else 'NOT met'})"
    )
    js = results["steady_figures_to_json_ms"]
    print(f"to_json of the four figures: median {js['median']:.1f} ms, max {js['max']:.1f}")
    print(f"RSS: {results['rss_before_cold_mb']:.0f} MB before reading, {results['rss_after_cold_mb']:.0f} MB after")
    print("RSS by refresh (+1 row each): " + ", ".join(f"{i}: {mb:.1f} MB" for i, mb in rss))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

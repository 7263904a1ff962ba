"""Wall time and validation-loss drop of the default CPT run, exactly as a new user starts it.

    python bench/cpt_default_bench.py [--config configs/cpt-tiny.yaml]

Runs `python -m forgellm train CONFIG` in a fresh FORGELLM_HOME (so the tiny model is built first,
as on a first start) and prints a Markdown table: tiny build time, training wall time, first and last
validation loss, the drop, and the median training tokens/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgellm import runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cpt-tiny.yaml")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FORGELLM_HOME": home, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "forgellm", "tiny"], check=True, env=env, cwd=ROOT, capture_output=True)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "forgellm", "train", args.config],
            check=True,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        train_s = time.perf_counter() - t0
        run_dir = Path(out.stdout.splitlines()[0])
        records = runs.read_metrics(run_dir)
    val = [r.loss for r in records if r.split == "val"]
    tps = statistics.median(r.tokens_per_sec for r in records if r.split == "train")
    print(f"{args.config} on {os.cpu_count()} cores, load average before: {load_before:.2f}\n")
    print("| tiny build | train wall time (incl. start-up) | first val loss | last val loss | drop | median tokens/s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {build_s:.1f} s | {train_s:.0f} s | {val[0]:.3f} | {val[-1]:.3f} | "
        f"{1 - val[-1] / val[0]:.1%} | {tps:,.0f} |"
    )


if __name__ == "__main__":
    main()

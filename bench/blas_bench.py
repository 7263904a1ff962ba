"""Matmul throughput of MLX on this machine with each available BLAS, each in a fresh process.

    python bench/blas_bench.py [--n 1024] [--repeats 20]

Rows: MLX's bundled reference BLAS (FORGELLM_BLAS=off), what ForgeLLM loads by default, the system
OpenBLAS when installed, and numpy's own OpenBLAS as a yardstick. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"

MLX_PROBE = """
import json, sys
import forgellm
from forgellm.platform import ensure_fast_blas, matmul_gflops
state = ensure_fast_blas()
print(json.dumps({"blas": state.name, "source": state.source,
                  "gflops": matmul_gflops(int(sys.argv[1]), int(sys.argv[2]))}))
"""

NUMPY_PROBE = """
import json, sys, time
import numpy as np
n, k = int(sys.argv[1]), int(sys.argv[2])
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
a @ b
t = time.perf_counter()
for _ in range(k): a @ b
print(json.dumps({"blas": "numpy", "source": "numpy wheel", "gflops": 2 * n**3 * k / (time.perf_counter() - t) / 1e9}))
"""


def probe(code: str, env_extra: dict[str, str], n: int, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    out = subprocess.run(
        [sys.executable, "-c", code, str(n), str(repeats)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    cases = [
        ("MLX, reference BLAS (FORGELLM_BLAS=off)", MLX_PROBE, {"FORGELLM_BLAS": "off"}),
        ("MLX, ForgeLLM default", MLX_PROBE, {}),
    ]
    if Path(SYSTEM_OPENBLAS).exists():
        cases.append(("MLX, system OpenBLAS (FORGELLM_BLAS=path)", MLX_PROBE, {"FORGELLM_BLAS": SYSTEM_OPENBLAS}))
    cases.append(("numpy (its own OpenBLAS)", NUMPY_PROBE, {}))
    print(f"float32 {args.n}x{args.n} matmul, {args.repeats} repeats, {os.cpu_count()} cores\n")
    print("| case | BLAS | source | GFLOP/s |\n|---|---|---|---|")
    for label, code, env in cases:
        r = probe(code, env, args.n, args.repeats)
        print(f"| {label} | {r['blas']} | {r['source'] or '-'} | {r['gflops']:.1f} |")


if __name__ == "__main__":
    main()

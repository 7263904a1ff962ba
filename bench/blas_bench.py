"""Matmul throughput of MLX on this machine with each available BLAS, each in a fresh process.

    python bench/blas_bench.py --repeats 40 --rounds 3        # about 40 s on the 2-core machine

Rows: MLX's bundled reference BLAS (FORGELLM_BLAS=off), what ForgeLLM loads by default, the system
OpenBLAS when installed, and numpy's own OpenBLAS as a yardstick. Each case runs --rounds times in a
fresh process, the cases interleaved (round 1: every case, round 2: every case, ...), so a drifting
machine speed hits all alike. Each row gives the OpenBLAS build the process really loaded
(`openblas_get_config()` of the library, through ctypes), the median GFLOP/s and its range. Last line:
the speed-up of ForgeLLM's default over the reference BLAS, the median of the per-round ratios and
their range: the one figure to quote (README, requirements.txt, forgellm/platform.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"

# The OpenBLAS build a library reports about itself (its version, kernel and thread count).
CONFIG_OF = """
def config_of(path):
    import ctypes
    lib = ctypes.CDLL(path)
    for symbol in ("openblas_get_config", "openblas_get_config64_", "scipy_openblas_get_config64_"):
        if hasattr(lib, symbol):
            fn = getattr(lib, symbol)
            fn.restype = ctypes.c_char_p
            return fn().decode()
    return "no openblas_get_config in " + path
"""

MLX_PROBE = (
    CONFIG_OF
    + """
import json, sys
import forgellm
from forgellm.platform import ensure_fast_blas, matmul_gflops
state = ensure_fast_blas()
config = config_of(state.library) if state.library else "MLX's bundled reference BLAS (not OpenBLAS)"
print(json.dumps({"blas": state.name, "source": state.source, "config": config,
                  "gflops": matmul_gflops(int(sys.argv[1]), int(sys.argv[2]))}))
"""
)

NUMPY_PROBE = (
    CONFIG_OF
    + """
import json, sys, time
import numpy as np
n, k = int(sys.argv[1]), int(sys.argv[2])
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
a @ b
t = time.perf_counter()
for _ in range(k): a @ b
gflops = 2 * n**3 * k / (time.perf_counter() - t) / 1e9
maps = open("/proc/self/maps").read().split()
libs = sorted({p for p in maps if "openblas" in p.lower() and ".so" in p})
print(json.dumps({"blas": "numpy", "source": "numpy wheel", "config": config_of(libs[0]) if libs else "?",
                  "gflops": gflops}))
"""
)


def probe(code: str, env_extra: dict[str, str], n: int, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    out = subprocess.run(
        [sys.executable, "-c", code, str(n), str(repeats)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20, help="matmuls timed per process")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per case, interleaved")
    args = parser.parse_args()
    cases = [
        ("MLX, reference BLAS (FORGELLM_BLAS=off)", MLX_PROBE, {"FORGELLM_BLAS": "off"}),
        ("MLX, ForgeLLM default", MLX_PROBE, {}),
    ]
    if Path(SYSTEM_OPENBLAS).exists():
        cases.append(("MLX, system OpenBLAS (FORGELLM_BLAS=path)", MLX_PROBE, {"FORGELLM_BLAS": SYSTEM_OPENBLAS}))
    cases.append(("numpy (its own OpenBLAS)", NUMPY_PROBE, {}))
    load = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in cases}
    for _ in range(args.rounds):
        for label, code, env in cases:
            runs[label].append(probe(code, env, args.n, args.repeats))
    print(
        f"float32 {args.n}x{args.n} matmul, {args.repeats} repeats per process, {args.rounds} rounds, "
        f"{os.cpu_count()} cores, load average {load:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    print("| case | BLAS | source | OpenBLAS build (openblas_get_config) | GFLOP/s, median (range) |")
    print("|---|---|---|---|---|")
    for label, _, _ in cases:
        r = runs[label][0]
        gflops = [x["gflops"] for x in runs[label]]
        print(f"| {label} | {r['blas']} | {r['source'] or '-'} | {r['config']} | {spread(gflops)} |")
    ref, default = (runs[label] for label, _, _ in cases[:2])
    ratios = [d["gflops"] / r["gflops"] for r, d in zip(ref, default, strict=True)]
    print(
        f"\nForgeLLM default / reference BLAS: {statistics.median(ratios):.1f}x "
        f"(rounds: {', '.join(f'{x:.1f}' for x in ratios)})"
    )


if __name__ == "__main__":
    main()

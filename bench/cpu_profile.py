"""Where a training step's CPU time goes: `perf record` on ForgeLLM's trainer, grouped by library.

    python bench/cpu_profile.py                       # bench-10m model (see peft_bench.py), LoRA r8, 4 x 512
    python bench/cpu_profile.py --model tiny --seq 256 --fine-tune-type full

Needs Linux `perf` (Debian: `apt install linux-perf`) and permission to profile your own processes.
Records the whole `python -m forgellm train` run at 999 Hz (call graphs off: only where time is spent)
and prints the share of samples per group:

- OpenBLAS: matrix multiplies (sgemm kernels and their packing routines),
- MLX kernels: MLX's own element-wise, reduction, softmax, copy and gather code (libmlx),
- MLX compiled: fused kernels that `mx.compile` generates and builds with the C++ compiler (JIT .so),
- Python: the interpreter (the training loop, data feeding, logging),
- kernel / libc / other: page faults, memcpy, allocation, thread scheduling.

Steps run long enough (default 60) that start-up (imports, model load, compilation) is a small part;
the number of samples before the first step is also printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import ROOT, forgellm_argv, md_table  # noqa: E402

GROUPS = [
    ("OpenBLAS (matmul)", re.compile(r"openblas|libblas|gemm", re.I)),
    # mx.compile's fused kernels: lib<ops>_<hash>_contiguous.so (or _strided) under <tmp>/mlx/<version>/cpu/
    ("MLX compiled (JIT)", re.compile(r"_(contiguous|strided)\.so$|/mlx/[\d.]+/cpu/")),
    ("MLX kernels", re.compile(r"libmlx", re.I)),
    ("Python", re.compile(r"python|libpython", re.I)),
    ("kernel", re.compile(r"\[kernel|vmlinux|\[unknown\]", re.I)),
    ("libc / libstdc++", re.compile(r"libc\.so|libc-|libstdc|libm\.so|libgomp|ld-linux", re.I)),
]


def group_of(dso: str) -> str:
    for name, pattern in GROUPS:
        if pattern.search(dso):
            return name
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bench-10m", help="built-in name or folder (default: the peft_bench model)")
    ap.add_argument("--fine-tune-type", default="lora", choices=["lora", "full"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--top", type=int, default=12, help="also list the hottest symbols")
    args = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("perf is not installed (Debian/Ubuntu: apt install linux-perf)")
    model = args.model
    if model == "bench-10m":
        from peft_bench import build_model

        model = str(build_model(Path(os.environ["FORGELLM_HOME"])))
    with tempfile.TemporaryDirectory(prefix="forgellm-profile-") as tmp:
        work = Path(tmp)
        argv = forgellm_argv(
            model,
            ROOT / "dataset" / "beekeeping",
            work / "runs",
            "profile",
            fine_tune_type=args.fine_tune_type,
            num_layers=-1,
            batch=args.batch,
            iters=args.iters,
            seq=args.seq,
            lr=1e-4,
        )
        data = work / "perf.data"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            ["perf", "record", "-F", "999", "-o", str(data), "--", *argv],
            check=True,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        report = subprocess.run(
            [
                "perf",
                "report",
                "-i",
                str(data),
                "--stdio",
                "--no-children",
                "--sort",
                "dso,sym",
                "--percent-limit",
                "0",
                "-F",
                "overhead,dso,sym",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    by_group: Counter[str] = Counter()
    symbols: list[tuple[float, str, str]] = []
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line) or re.match(r"\s*([\d.]+)%\s+(\S+)\s+(.*)", line)
        if not m:
            continue
        share, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        by_group[group_of(dso)] += share
        symbols.append((share, dso, sym))
    print(
        f"\n## CPU profile: ForgeLLM trainer, {Path(model).name}, {args.fine_tune_type}, "
        f"batch {args.batch} x {args.seq}, "
        f"{args.iters} steps (whole process, start-up included)\n"
    )
    rows = [[name, f"{share:.1f}%"] for name, share in by_group.most_common()]
    print(md_table(["where", "share of CPU samples"], rows))
    print(f"\nhottest {args.top} symbols:\n")
    top = sorted(symbols, reverse=True)[: args.top]
    print(md_table(["share", "library", "symbol"], [[f"{s:.1f}%", Path(d).name, y[:70]] for s, d, y in top]))


if __name__ == "__main__":
    main()

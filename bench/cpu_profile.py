"""Where the CPU time goes: `perf record` of ForgeLLM's trainer (or of the tokenizer benchmark), grouped by library.

    python bench/cpu_profile.py --iters 30            # bench-10m model (see peft_bench.py), LoRA r8, 4 x 512: ~3 min
    python bench/cpu_profile.py --model tiny --seq 256 --fine-tune-type full
    python bench/cpu_profile.py --target tokenizer --tokenizer <SmolLM2 folder>   # data prep: ~1 min

Needs Linux `perf` (Debian: `apt install linux-perf`) and permission to profile your own processes.
Records the whole process at 999 Hz (call graphs off: only where time is spent) and prints the share
of samples per group, and within each group the shares of the symbols that matter (every figure the
BENCHMARKS.md profile tables quote comes from this output, none is added up by hand):

- OpenBLAS: matrix multiplies: the sgemm kernels, its threads waiting for work (`blas_thread_server`,
  `exec_blas_async_wait`), the GEMM driver (`inner_thread`), packing/copy routines, the beta scaling,
- MLX kernels: MLX's own element-wise, reduction, softmax, copy and gather code (libmlx), of which the
  scalar `simd::exp<float, 1>`,
- MLX compiled: fused kernels that `mx.compile` generates and builds with the C++ compiler (JIT .so),
- Hugging Face tokenizers: the Rust extension (`tokenizers.abi3.so`), for --target tokenizer,
- Python: the interpreter (the training loop, data feeding, logging),
- libc / libm / libstdc++: of which libm's `__fmaf_fma3` (called per element by that `exp`) and glibc's
  allocator (malloc, free and their helpers),
- kernel / other: page faults, scheduling, and anything unattributed.

--target train (default): `python -m forgellm train` with the benchmark settings of train_bench.py, run
long enough (--iters) that start-up (imports, model load, compilation) is a small part.
--target tokenizer: `python bench/tokenizer_bench.py --tokenizer T --repeats 1` (data preparation of a
20 MB corpus, then the tokenizer alone once); its allocator line is the malloc/free share quoted for the
tokenizer.
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
from train_bench import PY, ROOT, forgellm_argv, md_table  # noqa: E402

GROUPS = [
    ("OpenBLAS (matmul)", re.compile(r"openblas|libblas|gemm", re.I)),
    # mx.compile's fused kernels: lib<ops>_<hash>_contiguous.so (or _strided) under <tmp>/mlx/<version>/cpu/
    ("MLX compiled (JIT)", re.compile(r"_(contiguous|strided)\.so$|/mlx/[\d.]+/cpu/")),
    ("MLX kernels", re.compile(r"libmlx", re.I)),
    ("Hugging Face tokenizers (Rust)", re.compile(r"tokenizers\.", re.I)),
    ("Python", re.compile(r"python|libpython", re.I)),
    ("kernel", re.compile(r"\[kernel|vmlinux|\[unknown\]", re.I)),
    ("libc / libm / libstdc++", re.compile(r"libc\.so|libc-|libstdc|libm\.so|libgomp|ld-linux", re.I)),
]
# glibc's allocator: the entry points and the helpers they spend their time in.
ALLOCATOR = r"^(__libc_)?(malloc|free|cfree|calloc|realloc|memalign)\b|^_int_(malloc|free|realloc|memalign)|"
ALLOCATOR += r"malloc_consolidate|unlink_chunk|tcache|sysmalloc|arena_get|^__?libc_(malloc|free)"
SUBGROUPS = {
    "OpenBLAS (matmul)": [
        ("sgemm kernel", r"gemm_kernel"),
        ("threads waiting for work", r"blas_thread_server|exec_blas_async_wait"),
        ("GEMM driver inner_thread", r"inner_thread"),
        ("packing/copy", r"copy"),
        ("beta", r"gemm_beta"),
    ],
    "MLX kernels": [("simd::exp<float, 1>", r"simd::exp")],
    "libc / libm / libstdc++": [("__fmaf_fma3", r"fmaf"), ("malloc/free and helpers", ALLOCATOR)],
}


def group_of(dso: str) -> str:
    for name, pattern in GROUPS:
        if pattern.search(dso):
            return name
    return "other"


def record(argv: list[str], data: Path) -> str:
    """`perf record` the command at 999 Hz, then `perf report` by library and symbol (text)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        ["perf", "record", "-F", "999", "-o", str(data), "--", *argv],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    report = ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym"]
    report += ["--percent-limit", "0", "-F", "overhead,dso,sym"]
    return subprocess.run(report, capture_output=True, text=True, check=True).stdout


def parse(report: str) -> list[tuple[float, str, str]]:
    """(share %, library, symbol) of every line of the report."""
    symbols = []
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line) or re.match(r"\s*([\d.]+)%\s+(\S+)\s+(.*)", line)
        if m:
            symbols.append((float(m.group(1)), m.group(2), m.group(3).strip()))
    return symbols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["train", "tokenizer"], default="train")
    ap.add_argument("--model", default="bench-10m", help="built-in name or folder (default: the peft_bench model)")
    ap.add_argument("--fine-tune-type", default="lora", choices=["lora", "full"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--tokenizer", help="--target tokenizer: tokenizer folder (default: the tiny model's)")
    ap.add_argument("--top", type=int, default=12, help="also list the hottest symbols")
    args = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("perf is not installed (Debian/Ubuntu: apt install linux-perf)")
    with tempfile.TemporaryDirectory(prefix="forgellm-profile-") as tmp:
        work = Path(tmp)
        if args.target == "tokenizer":
            argv = [PY, str(ROOT / "bench" / "tokenizer_bench.py"), "--repeats", "1"]
            argv += ["--tokenizer", args.tokenizer] if args.tokenizer else []
            title = f"bench/tokenizer_bench.py --repeats 1, tokenizer {args.tokenizer or 'tiny'}"
        else:
            model = args.model
            if model == "bench-10m":
                from peft_bench import build_model

                model = str(build_model(Path(os.environ["FORGELLM_HOME"])))
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
            title = (
                f"ForgeLLM trainer, {Path(model).name}, {args.fine_tune_type}, batch {args.batch} x {args.seq}, "
                f"{args.iters} steps"
            )
        symbols = parse(record(argv, work / "perf.data"))
    by_group: Counter[str] = Counter()
    by_sub: Counter[tuple[str, str]] = Counter()
    for share, dso, sym in symbols:
        group = group_of(dso)
        by_group[group] += share
        for label, pattern in SUBGROUPS.get(group, []):
            if re.search(pattern, sym):
                by_sub[group, label] += share
                break
    print(f"\n## CPU profile: {title} (whole process, start-up included)\n")
    rows = []
    for name, share in by_group.most_common():
        parts = [f"{label} {by_sub[name, label]:.1f}%" for label, _ in SUBGROUPS.get(name, []) if by_sub[name, label]]
        rows.append([name, f"{share:.1f}%", ", ".join(parts)])
    print(md_table(["where", "share of CPU samples", "of which"], rows))
    allocator = sum(s for s, d, y in symbols if re.search(ALLOCATOR, y) and group_of(d) == "libc / libm / libstdc++")
    print(f"\nglibc allocator (malloc, free and their helpers): {allocator:.1f}% of all samples")
    print(f"\nhottest {args.top} symbols:\n")
    top = sorted(symbols, reverse=True)[: args.top]
    print(md_table(["share", "library", "symbol"], [[f"{s:.1f}%", Path(d).name, y[:70]] for s, d, y in top]))


if __name__ == "__main__":
    main()

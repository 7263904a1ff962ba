"""Benchmark the data pipeline: tokenize + pack throughput (MB/s) and peak memory on a large corpus.

    python bench/data_bench.py              # 200 MB synthetic CPT corpus, the tiny model's tokenizer
    python bench/data_bench.py --mb 20      # quicker
    python bench/data_bench.py --tokenizer models/smollm2-135m-instruct   # any local tokenizer folder
    python bench/data_bench.py --mb 20 --repeats 5   # median of five cold runs (this VM's speed drifts)
    python bench/data_bench.py --mb 20 --tokenizer <SmolLM2 folder> --piece-chars 4096,65536 --repeats 5

--piece-chars A,B compares the size of the pieces long texts are cut into before tokenizing
(`forgellm.data.tokens.PIECE_CHARS`, 4096 by default; every cut is still checked to keep the token
ids): the values alternate in each repeat (A B, then B A, ...), and each value gets its median and
runs, plus the ratio A / B of each interleaved pair. The figures for the 64 KB pieces are today's cutter
with larger pieces, not the code before pieces were checked (e3a1955^).

The corpus is made by shuffling the sentences of the shipped sample corpus (dataset/beekeeping) into
files of about 1 MB in a temporary folder. `prepare` runs in a child process so that its peak RSS
(ru_maxrss) is measured alone; a second run measures the cache hit. Targets: >= 5 MB/s and a peak RSS
<= 1 GB for 200 MB. Prints one human line per figure and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILE_BYTES = 1 << 20


def sentences() -> list[str]:
    """Sentences of the sample corpus (markdown and text files)."""
    out = []
    for path in sorted((ROOT / "dataset" / "beekeeping").rglob("*")):
        if path.suffix in (".md", ".txt"):
            out += [
                s.strip() for s in re.split(r"(?<=[.!?])\s+", path.read_text(encoding="utf-8")) if len(s.strip()) > 20
            ]
    if not out:
        sys.exit("no sample corpus under dataset/beekeeping: nothing to build the synthetic corpus from")
    return out


def make_corpus(folder: Path, megabytes: int, seed: int = 0) -> int:
    """Write ~`megabytes` MB of shuffled sentences in ~1 MB files (paragraphs of 3-8 sentences)."""
    rng = random.Random(seed)
    pool = sentences()
    written, index = 0, 0
    while written < megabytes * 1_000_000:
        parts, size = [], 0
        while size < FILE_BYTES:
            paragraph = " ".join(rng.choice(pool) for _ in range(rng.randint(3, 8)))
            parts.append(paragraph)
            size += len(paragraph) + 2
        data = "\n\n".join(parts).encode("utf-8")
        (folder / f"doc{index:05d}.txt").write_bytes(data)
        written += len(data)
        index += 1
    return written


def tokenizer_folder(arg: str | None, scratch: Path) -> Path:
    """A saved tokenizer to load in the child: the one given, or the tiny model's (trained on the sample)."""
    if arg:
        return Path(arg)
    from forgellm.models.tiny import corpus_texts, train_tokenizer

    folder = scratch / "tokenizer"
    train_tokenizer(corpus_texts(), 4096).save_pretrained(folder)
    return folder


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import forgellm.data.tokens
if {piece}:
    forgellm.data.tokens.PIECE_CHARS = {piece}
from transformers import AutoTokenizer
from forgellm.config import from_dict
from forgellm.data import prepare
tok = AutoTokenizer.from_pretrained({tok!r})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = from_dict({{"data": {data!r}, "max_seq_length": {seq}, "val_fraction": 0.01}})
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t, c = time.perf_counter(), cpu()
p = prepare(cfg, tok, cache_dir={cache!r})
seconds, cpu_seconds = time.perf_counter() - t, cpu() - c
print(json.dumps({{"seconds": seconds, "cpu_seconds": cpu_seconds, "rss_before_kb": base,
                   "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "hit": p.report["cache"]["hit"], "train_rows": p.train.rows, "yield": p.report["yield"]["fraction"],
                   "tokens": p.report["tokens"]["corpus"]}}))
"""


def run_child(**kw: object) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), **kw)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"prepare failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB (default 200)")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--tokenizer", help="folder of a saved Hugging Face tokenizer (default: the tiny model's)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="cold runs (fresh cache each); the median is reported (this VM's speed drifts)",
    )
    parser.add_argument(
        "--piece-chars",
        default="0",
        help="comma list of piece sizes in characters to compare, interleaved (default: the library's, 4096)",
    )
    args = parser.parse_args()
    pieces = [int(x) for x in args.piece_chars.split(",")]
    with tempfile.TemporaryDirectory(prefix="forgellm-data-bench-") as tmp:
        scratch = Path(tmp)
        (scratch / "corpus").mkdir()
        t = time.perf_counter()
        size = make_corpus(scratch / "corpus", args.mb)
        print(f"corpus: {size / 1e6:.1f} MB in {time.perf_counter() - t:.1f}s", flush=True)
        tok = str(tokenizer_folder(args.tokenizer, scratch))
        kw = dict(tok=tok, data=str(scratch / "corpus"), seq=args.max_seq_length)
        colds: dict[int, list[dict]] = {p: [] for p in pieces}
        for i in range(args.repeats):
            for p in pieces if i % 2 == 0 else pieces[::-1]:
                colds[p].append(run_child(**kw, piece=p, cache=str(scratch / f"cache-{p}-{i}")))
        warm = run_child(**kw, piece=pieces[0], cache=str(scratch / f"cache-{pieces[0]}-0"))
    for p in pieces:
        report(colds[p], warm, size, args.repeats, p)
    if len(pieces) == 2:
        a, b = ([size / 1e6 / r["seconds"] for r in colds[p]] for p in pieces)
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        print(
            f"pairs, piece_chars {pieces[0]} vs {pieces[1]} (MB/s): "
            + ", ".join(f"{x:.2f} vs {y:.2f}" for x, y in zip(a, b, strict=True))
            + f"; ratio median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        )


def report(colds: list[dict], warm: dict, size: int, repeats: int, piece: int) -> None:
    cold = sorted(colds, key=lambda r: r["seconds"])[len(colds) // 2]
    result = {
        "piece_chars": piece or "default",
        "corpus_mb": round(size / 1e6, 1),
        "tokens": cold["tokens"],
        "cold_seconds": round(cold["seconds"], 2),
        "mb_per_s": round(size / 1e6 / cold["seconds"], 2),
        "mb_per_s_all_runs": [round(size / 1e6 / r["seconds"], 2) for r in colds],
        "mb_per_cpu_second": round(size / 1e6 / cold["cpu_seconds"], 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(cold["peak_kb"] / 1024, 1),
        "rss_after_imports_mb": round(cold["rss_before_kb"] / 1024, 1),
        "cache_hit_seconds": round(warm["seconds"], 2),
        "cache_hit": warm["hit"],
        "yield": cold["yield"],
        "cpu_count": len(os.sched_getaffinity(0)),
        "max_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    runs = f" (median of {repeats}: {', '.join(map(str, result['mb_per_s_all_runs']))})" if repeats > 1 else ""
    label = f"piece_chars {piece}: " if piece else ""
    print(
        f"{label}tokenize + pack: {result['mb_per_s']} MB/s{runs} ({result['cold_seconds']}s for "
        f"{result['corpus_mb']} MB, {result['tokens']:,} tokens); {result['mb_per_cpu_second']} MB per CPU-second on "
        f"{result['cpu_count']} cores, load average {result['load_average_1m']} (other processes slow it)"
    )
    print(
        f"peak RSS while preparing: {result['peak_rss_mb']} MB (of which {result['rss_after_imports_mb']} MB "
        "is Python + transformers before prepare)"
    )
    print(f"cache hit: {result['cache_hit_seconds']}s (hashing the files, no tokenizing)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

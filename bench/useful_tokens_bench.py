"""Useful (trained, non-padding) tokens per second on a mixed-length corpus: ForgeLLM's packed CPT
pipeline vs mlx-lm's own `{"text"}` dataset path, same model, corpus, batch size and sequence length.

    python bench/useful_tokens_bench.py                       # tiny model, dataset/beekeeping, 4 x 256
    python bench/useful_tokens_bench.py --seq 1024            # longer windows: mlx-lm pads the articles
    python bench/useful_tokens_bench.py --corpus mixed --seq 1024   # notes-to-chapters length mix

Corpus --corpus mixed (what a folder of notes, emails, abstracts, articles and chapters looks like):
the text of dataset/beekeeping re-cut at paragraph ends into documents whose lengths are drawn
log-uniformly between --min-chars and --max-chars (seeded), written as one JSONL file.

Corpus --corpus beekeeping (default): dataset/beekeeping as one document per file or JSONL record
(12 handbook chapters and 6 journal files of thousands of tokens, 45 articles of a few hundred), split
into train/validation exactly as ForgeLLM splits it (the same seeded hash of each document's content),
so both tools train on the same documents. mlx-lm gets them as train.jsonl / valid.jsonl with one
`{"text": document}` line each: it tokenizes each document, appends EOS, truncates it to
--max-seq-length (everything past that is never trained) and pads each batch to its longest row
rounded up to 32 (+1). ForgeLLM packs all documents back to back into windows of max_seq_length + 1
tokens, every target trained.

mlx-lm is given --max-seq-length seq + 1 so that both tools run at most `seq` input positions per row
(mlx-lm's limit caps the whole row, inputs are row[:-1]); its batches are formed and counted with its own
`iterate_batches` (in a helper child). Time: each tool runs N1 and N2 iterations (both multiples of
mlx-lm's batches per epoch, so the steps in between cover whole mlx-lm epochs and their useful tokens
are known exactly); useful tokens/s = useful tokens trained between N1 and N2 / (T2 - T1). Useful for
mlx-lm = real targets after truncation, without padding (its own tokens/s also counts one padding
position per row shorter than the batch); for ForgeLLM = targets with weight 1 (all of them, in CPT).
Also printed: how many of the training split's corpus tokens each path can train on at all.

Each tool first runs N1 iterations untimed: MLX's CPU backend builds fused kernels with the C++
compiler the first time it meets a shape (cached in /tmp), which would otherwise fall into one tool's
first timed run. Waits for a 1-minute load average below --max-load before every timed run (see train_bench.py).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import ROOT, ensure_models, forgellm_argv, md_table, mlx_lm_argv, prep_child, run_child  # noqa: E402

PREP_CHILD = r"""
import hashlib, json, sys
import numpy as np
import forgellm
from transformers import AutoTokenizer
from forgellm.config import from_dict
from forgellm.data import prepare
from forgellm.data.ingest import scan_files, read_documents
from forgellm.data.records import Problems
from forgellm.data.split import rank, val_count
import mlx.core as mx
from mlx_lm.tuner.datasets import TextDataset, CacheDataset
from mlx_lm.tuner.trainer import iterate_batches

a = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(a["model_path"])
cfg = from_dict({"model": a["model"], "data": a["data"], "max_seq_length": a["seq"], "train_type": "cpt"})
p = prepare(cfg, tok)
rep = p.report

# The same documents, deduplicated and split the way ForgeLLM does it (forgellm/data/cpt.py).
docs, digests, seen = [], [], set()
problems = Problems()
for entry in scan_files(a["data"], "cpt"):
    if entry.status != "read":
        continue
    for doc in read_documents(entry, cfg.text_field, problems):
        if not doc.text:
            continue
        d = hashlib.blake2b(doc.text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if d in seen:
            continue
        seen.add(d); docs.append(doc.text); digests.append(d[:8])
order = rank(np.frombuffer(b"".join(digests), dtype=np.uint64).copy(), cfg.seed)
n_val = val_count(len(docs), cfg.val_fraction)
val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
if a["sort_for_mlx_lm"]:  # shortest first: mlx-lm 0.32's own length sort is a no-op for {"text"} records
    train_idx.sort(key=lambda i: len(tok.encode(docs[i])))
for name, idx in (("train", train_idx), ("valid", val_idx)):
    with open(a["out_dir"] + f"/{name}.jsonl", "w") as f:
        for i in idx:
            f.write(json.dumps({"text": docs[i]}) + "\n")

rows = [{"text": docs[i]} for i in train_idx]
ds = CacheDataset(TextDataset(rows, tok))
lens = np.array([len(ds[i][0]) for i in range(len(ds))])  # mlx-lm's tokens per document, EOS included
real, counted, widths, computed = [], [], [], []
for batch, lengths in iterate_batches(ds, a["batch"], a["mlx_seq"], loop=False):
    b = np.array(batch); ln = np.array(lengths)
    real.append(int((np.minimum(ln[:, 1], b.shape[1]) - 1).sum()))
    steps = np.arange(1, b.shape[1])
    counted.append(int(((steps[None] >= ln[:, :1]) & (steps[None] <= ln[:, 1:])).sum()))
    widths.append(int(b.shape[1]))
    computed.append(int(b.shape[0] * (b.shape[1] - 1)))
L = a["seq"]
out = {
    "documents": {"total": len(docs), "train": len(train_idx), "val": len(val_idx),
                  "train_tokens_mlx_lm": int(lens.sum()), "train_tokens_forgellm": rep["tokens"]["train"],
                  "train_docs_longer_than_row": int((lens > a["mlx_seq"]).sum()),
                  "train_doc_tokens_min_median_max": [int(lens.min()), int(np.median(lens)), int(lens.max())]},
    "forgellm": {"train_rows": p.train.rows, "targets_per_step": a["batch"] * L,
                 "trainable_targets": p.train.rows * L, "train_tokens_in_rows": rep["yield"]["train_tokens"],
                 "corpus_tokens": rep["yield"]["corpus_tokens"]},
    "mlx_lm": {"batches_per_epoch": len(real), "useful_per_epoch": int(sum(real)),
               "counted_per_epoch": int(sum(counted)),
               "computed_positions_per_epoch": int(sum(computed)), "batch_widths": sorted(set(widths)),
               "rows_used_per_epoch": len(real) * a["batch"], "rows": len(rows),
               "trainable_targets": int(sum(real)), "useful_per_step": float(np.mean(real)),
               "padding_fraction": 1 - sum(real) / sum(computed)},
}
print("PREP_JSON " + json.dumps(out))
"""


def prepare(model: str, model_path: Path, seq: int, batch: int, out_dir: Path, data: Path, sort: bool) -> dict:
    return prep_child(PREP_CHILD, model, model_path, seq, batch, out_dir, data, {"sort_for_mlx_lm": sort})


def mixed_corpus(folder: Path, min_chars: int, max_chars: int, seed: int = 0) -> Path:
    """The sample corpus's sentences, in order, regrouped into documents of log-uniform random length
    (paragraph breaks kept where they fall inside a document)."""
    sys.path.insert(0, str(ROOT))
    from forgellm.models.tiny import corpus_texts

    paragraphs = [p.strip() for text in corpus_texts() for p in re.split(r"\n\s*\n", text) if p.strip()]
    rng = random.Random(seed)

    def draw() -> float:
        return math.exp(rng.uniform(math.log(min_chars), math.log(max_chars)))

    docs, current, size, target = [], [[]], 0, draw()
    for paragraph in paragraphs:
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
            current[-1].append(sentence)
            size += len(sentence) + 1
            if size >= target:
                docs.append("\n\n".join(" ".join(p) for p in current if p))
                current, size, target = [[]], 0, draw()
        current.append([])
    if size:
        docs.append("\n\n".join(" ".join(p) for p in current if p))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "documents.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--corpus", default="beekeeping", choices=["beekeeping", "mixed"])
    ap.add_argument(
        "--sort-for-mlx-lm",
        action="store_true",
        help="give mlx-lm its training documents shortest first, so its batches hold similar lengths",
    )
    ap.add_argument("--min-chars", type=int, default=200, help="--corpus mixed: shortest document drawn")
    ap.add_argument("--max-chars", type=int, default=16000, help="--corpus mixed: longest document drawn")
    ap.add_argument("--seq", type=int, default=256, help="max_seq_length (default 256)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--epochs", default="1,15", help="N1,N2 in mlx-lm epochs (default 1,15)")
    ap.add_argument("--fine-tune-type", default="full", choices=["full", "lora"])
    ap.add_argument("--repeat", type=int, default=1, help="runs per (tool, N); the fastest is used")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-load", type=float, default=0.8)
    ap.add_argument("--max-wait", type=float, default=600.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    model_path = ensure_models([args.model])[args.model]
    work = Path(tempfile.mkdtemp(prefix="forgellm-useful-bench-"))
    try:
        data = ROOT / "dataset" / "beekeeping"
        if args.corpus == "mixed":
            data = mixed_corpus(work / "mixed", args.min_chars, args.max_chars)
        prep = prepare(args.model, model_path, args.seq, args.batch, work / "data", data, args.sort_for_mlx_lm)
        f, m, d = prep["forgellm"], prep["mlx_lm"], prep["documents"]
        e1, e2 = map(int, args.epochs.split(","))
        n1, n2 = e1 * m["batches_per_epoch"], e2 * m["batches_per_epoch"]
        print(
            f"corpus: {d['total']} documents, {d['train']} train / {d['val']} val; train documents have "
            f"{d['train_doc_tokens_min_median_max']} tokens (min/median/max), {d['train_docs_longer_than_row']} of "
            f"{d['train']} are longer than a row of {args.seq + 1}",
            flush=True,
        )
        print(
            f"mlx-lm: {m['batches_per_epoch']} batches per epoch, widths {m['batch_widths']}, padding "
            f"{100 * m['padding_fraction']:.1f}% of computed positions, {m['useful_per_step']:.1f} useful targets/step "
            f"(its own count {m['counted_per_epoch'] / m['batches_per_epoch']:.1f}); N1={n1}, N2={n2}",
            flush=True,
        )
        common = dict(fine_tune_type=args.fine_tune_type, num_layers=-1, batch=args.batch, lr=args.lr)
        times: dict[str, dict[int, list]] = {"forgellm": {n1: [], n2: []}, "mlx-lm": {n1: [], n2: []}}
        loads = []
        # An untimed first run of each tool at N1 (one mlx-lm epoch: every batch width) builds MLX's JIT
        # kernels for these shapes, which would otherwise land in the first timed run only.
        plan = [("warmup", n1, tool) for tool in ("forgellm", "mlx-lm")]
        plan += [(rep, n, tool) for rep in range(args.repeat) for n in (n1, n2) for tool in ("forgellm", "mlx-lm")]
        for rep, n, tool in plan:
            tag = f"{tool}-{n}-{rep}"
            if tool == "forgellm":
                argv = forgellm_argv(args.model, data, work / "runs", tag, iters=n, seq=args.seq, **common)
            else:
                argv = mlx_lm_argv(
                    model_path, work / "data", work / f"adapters-{tag}", iters=n, seq=args.seq + 1, **common
                )
            run = run_child(argv, work / f"{tag}.log", max_load=args.max_load, max_wait=args.max_wait)
            shutil.rmtree(work / "runs" / tag, ignore_errors=True)
            shutil.rmtree(work / f"adapters-{tag}", ignore_errors=True)
            if rep == "warmup":
                continue
            times[tool][n].append(run.wall_s)
            loads.append(run.load["load1"])
            print(
                f"  {tool:9s} N={n:4d} {run.wall_s:7.2f}s  RSS {run.maxrss_mb:6.1f} MB  load {run.load['load1']}"
                f"{'' if run.load['quiet'] else ' (NOT quiet)'}",
                flush=True,
            )
        useful = {"forgellm": (n2 - n1) * f["targets_per_step"], "mlx-lm": (e2 - e1) * m["useful_per_epoch"]}
        computed = {
            "forgellm": (n2 - n1) * f["targets_per_step"],
            "mlx-lm": (e2 - e1) * m["computed_positions_per_epoch"],
        }
        result = {
            "corpus": args.corpus,
            "sort_for_mlx_lm": args.sort_for_mlx_lm,
            "seq": args.seq,
            "batch": args.batch,
            "n1": n1,
            "n2": n2,
            "prep": prep,
            "loads": loads,
            "tools": {},
        }
        for tool in ("forgellm", "mlx-lm"):
            t1, t2 = min(times[tool][n1]), min(times[tool][n2])
            result["tools"][tool] = {
                "t1_s": t1,
                "t2_s": t2,
                "useful_tokens": useful[tool],
                "useful_tokens_per_s": useful[tool] / (t2 - t1),
                "computed_positions_per_s": computed[tool] / (t2 - t1),
            }
        fr, mr = result["tools"]["forgellm"], result["tools"]["mlx-lm"]
        ratio = fr["useful_tokens_per_s"] / mr["useful_tokens_per_s"]
        result["ratio"] = ratio
        train_tokens = d["train_tokens_forgellm"]
        rows = [
            [
                "ForgeLLM (packed windows)",
                f"{fr['useful_tokens_per_s']:,.0f}",
                f"{ratio:.3f}",
                f"{fr['computed_positions_per_s']:,.0f}",
                f"{f['trainable_targets']:,} of {train_tokens:,} ({100 * f['trainable_targets'] / train_tokens:.1f}%)",
                f"{f['train_rows']} rows",
                f"{n1}/{n2}: {fr['t1_s']:.1f}/{fr['t2_s']:.1f}",
            ],
            [
                'mlx-lm {"text"} (truncate + pad)',
                f"{mr['useful_tokens_per_s']:,.0f}",
                "1.000",
                f"{mr['computed_positions_per_s']:,.0f}",
                f"{m['trainable_targets']:,} of {train_tokens:,} ({100 * m['trainable_targets'] / train_tokens:.1f}%)",
                f"{m['rows_used_per_epoch']} rows ({100 * m['padding_fraction']:.1f}% padding)",
                f"{n1}/{n2}: {mr['t1_s']:.1f}/{mr['t2_s']:.1f}",
            ],
        ]
        print(
            f"\n{args.model}, {args.fine_tune_type}, {args.corpus} corpus, batch {args.batch} x {args.seq}; "
            f"load1 at run starts: {loads}. "
            "Goal: useful tokens/s ratio >= 1.3.\n"
        )
        print(
            md_table(
                [
                    "path",
                    "useful tokens/s",
                    "ratio",
                    "positions computed/s",
                    "train-split tokens it can train on",
                    "one epoch",
                    "N1/N2: T1/T2 s",
                ],
                rows,
            )
        )
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

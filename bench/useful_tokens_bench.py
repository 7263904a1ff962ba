"""Useful (trained, non-padding) tokens per second: ForgeLLM's packed CPT windows vs mlx-lm's own
`{"text"}` dataset path, same model, trained parameters, optimizer, corpus, batch size and sequence length.

    python bench/useful_tokens_bench.py --corpus mixed --seq 1024 --pairs 3                    # ~5 min
    python bench/useful_tokens_bench.py --corpus mixed --seq 1024 --sort-for-mlx-lm --pairs 5  # ~8 min
    python bench/useful_tokens_bench.py --seq 1024 --pairs 5                                   # ~6 min

(times: the idle 2-core development machine, where a 4 x 1024 step of the tiny model takes about 3 s;
each pair is one ForgeLLM block and one mlx-lm block of one mlx-lm epoch each, 14-20 steps.)

Corpus --corpus mixed (what a folder of notes, emails, abstracts, articles and chapters looks like):
the text of dataset/beekeeping re-cut at sentence ends into documents whose lengths are drawn
log-uniformly between --min-chars and --max-chars (seeded), written as one JSONL file.
Corpus --corpus beekeeping (default): dataset/beekeeping as it ships, one document per file or JSONL record.

Both sides train on the same documents: the training split ForgeLLM makes (the same seeded hash of each
document's content). ForgeLLM packs them back to back into windows of seq + 1 tokens, every target
trained. mlx-lm gets one `{"text": document}` record each (its `TextDataset` + `CacheDataset`, as
`mlx_lm lora` loads a train.jsonl): it tokenizes each document, appends EOS, truncates it to
max_seq_length = seq + 1 (so both sides run at most `seq` input positions per row; everything past that
is never trained) and its `iterate_batches` pads each batch to its longest row rounded up to 32 (+1).
--sort-for-mlx-lm gives mlx-lm its documents shortest first (mlx-lm 0.32's own length sort is a no-op
for `{"text"}` records: it sorts by the length of the raw record, 1 for every line).

The same parameters train on both sides: with --fine-tune-type full, every transformer block (ForgeLLM's
`num_layers: <blocks>`, mlx-lm's unfreeze of its last num_layers blocks; the embeddings stay frozen on
both), with lora, rank 8 scale 20 on every block. Both use Adam with bias correction (ForgeLLM's
`optimizer: adam`; the mlx-lm side is given `bias_correction=True`, see bench/mlx_lm_peer.py), constant
LR 1e-4, no clipping.

Method: both run in this process (speed drifts 5-10% from one minute to the next on the shared
machine, as much as the differences measured, so whole runs minutes apart cannot separate them).
ForgeLLM: its real `Trainer` set up from a config and its `_one_step()`. mlx-lm: a second copy of the
model and the compiled step of `mlx_lm.tuner.trainer.train` fed by a fresh `iterate_batches` epoch
(bench/mlx_lm_peer.py). After an untimed warm-up (3 ForgeLLM steps; one mlx-lm batch of every width,
as each new width compiles), --pairs pairs of blocks alternate ABBA: an mlx-lm block is one whole epoch
(so its useful tokens are exactly the epoch's), a ForgeLLM block the same number of steps. Useful tokens:
for mlx-lm, each row's real targets after truncation, no padding (its own token count also includes one
padding position per row shorter than the batch); for ForgeLLM the trained-token count `_one_step`
returns (every target, in CPT). Each pair gives a ratio ForgeLLM / mlx-lm of useful tokens/s; the
output lists every pair, the median, range and IQR, and whether every pair lies on the same side of 1.
Also printed: how many of the training split's tokens each path can train on at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("FORGELLM_HOME", "/tmp/bench_home")

import forgellm  # noqa: E402,F401  (loads OpenBLAS for MLX: it must come before the first mlx.core import)

# isort: split
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx_lm_peer import LEARNING_RATE, LORA, adam, blas_line, compiled_step, trainable_model  # noqa: E402
from step_ab_bench import forgellm_trainer  # noqa: E402
from train_bench import md_table, wait_for_quiet  # noqa: E402


def mixed_corpus(folder: Path, min_chars: int, max_chars: int, seed: int = 0) -> Path:
    """The sample corpus's sentences, in order, regrouped into documents of log-uniform random length
    (paragraph breaks kept where they fall inside a document)."""
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


def training_documents(cfg, tokenizer, sort: bool) -> list[str]:
    """The training documents, deduplicated and split exactly as ForgeLLM does it (forgellm/data/cpt.py)."""
    from forgellm.data.ingest import read_documents, scan_files
    from forgellm.data.records import Problems
    from forgellm.data.split import rank, val_count

    docs, digests, seen = [], [], set()
    problems = Problems()
    for entry in scan_files(cfg.data, "cpt"):
        if entry.status != "read":
            continue
        for doc in read_documents(entry, cfg.text_field, problems):
            if not doc.text:
                continue
            digest = hashlib.blake2b(doc.text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            if digest in seen:
                continue
            seen.add(digest)
            docs.append(doc.text)
            digests.append(digest[:8])
    order = rank(np.frombuffer(b"".join(digests), dtype=np.uint64).copy(), cfg.seed)
    train_idx = sorted(order[val_count(len(docs), cfg.val_fraction) :].tolist())
    if sort:
        train_idx.sort(key=lambda i: len(tokenizer.encode(docs[i])))
    return [docs[i] for i in train_idx]


def mlx_lm_dataset(docs: list[str], tokenizer):
    from mlx_lm.tuner.datasets import CacheDataset, TextDataset

    return CacheDataset(TextDataset([{"text": d} for d in docs], tokenizer))


def epoch_batches(dataset, batch: int, max_seq: int, seed: int):
    """One epoch of mlx-lm's own batches: (tokens, lengths) as `iterate_batches` yields them."""
    from mlx_lm.tuner.trainer import iterate_batches

    return iterate_batches(dataset, batch, max_seq, loop=False, seed=seed)


def useful_targets(tokens: mx.array, lengths: mx.array) -> int:
    """Real targets of an mlx-lm batch: each row's tokens after truncation, minus one (no padding)."""
    return int((np.minimum(np.array(lengths)[:, 1], tokens.shape[1]) - 1).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="built-in name (built under $FORGELLM_HOME) or a folder")
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
    ap.add_argument("--pairs", type=int, default=5, help="ABBA pairs of timed blocks (default 5)")
    ap.add_argument("--fine-tune-type", default="full", choices=["full", "lora"])
    ap.add_argument("--max-load", type=float, default=0.8, help="wait for this 1-minute load average before timing")
    ap.add_argument("--max-wait", type=float, default=600.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from forgellm.models.registry import resolve_model

    model_path = Path(args.model) if Path(args.model).is_dir() else resolve_model(args.model)
    layers = json.loads((model_path / "config.json").read_text())["num_hidden_layers"]
    started = time.perf_counter()
    print(blas_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="forgellm-useful-bench-") as tmp:
        work = Path(tmp)
        data = ROOT / "dataset" / "beekeeping"
        if args.corpus == "mixed":
            data = mixed_corpus(work / "mixed", args.min_chars, args.max_chars)
        cfg = {
            "model": str(model_path),
            "data": str(data),
            "train_type": "cpt",
            "fine_tune_type": args.fine_tune_type,
            "num_layers": layers,  # every block, embeddings frozen: what mlx-lm trains
            "batch_size": args.batch,
            "iters": 1_000_000,
            "max_seq_length": args.seq,
            "optimizer": "adam",
            "lr_schedule": "constant",
            "learning_rate": LEARNING_RATE,
            "warmup_steps": 0,
            "max_grad_norm": None,
            "grad_accumulation_steps": 1,
            "steps_per_eval": 1_000_000,
            "lora_parameters": LORA,
            "seed": 0,
        }
        trainer = forgellm_trainer(model_path, cfg, work / "runs")
        report = json.loads((trainer.run_dir / "data_report.json").read_text())
        model, tokenizer = trainable_model(model_path, args.fine_tune_type, layers)
        peer_step = compiled_step(model, adam())
        docs = training_documents(trainer.cfg, tokenizer, args.sort_for_mlx_lm)
        dataset = mlx_lm_dataset(docs, tokenizer)
        max_seq = args.seq + 1  # mlx-lm's limit caps the whole row; inputs are row[:-1]
        epoch = list(epoch_batches(dataset, args.batch, max_seq, seed=0))
        steps = len(epoch)
        useful_epoch = sum(useful_targets(t, ln) for t, ln in epoch)
        computed_epoch = sum(t.shape[0] * (t.shape[1] - 1) for t, _ in epoch)
        widths = sorted({t.shape[1] for t, _ in epoch})
        doc_lens = np.array([len(dataset[i][0]) for i in range(len(dataset))])
        print(
            f"corpus: {len(docs)} training documents of {doc_lens.min()}/{int(np.median(doc_lens))}/{doc_lens.max()} "
            f"tokens (min/median/max), {(doc_lens > max_seq).sum()} longer than a row of {max_seq}; mlx-lm: {steps} "
            f"batches per epoch, widths {widths}, {100 * (1 - useful_epoch / computed_epoch):.1f}% padding",
            flush=True,
        )
        # Warm-up: ForgeLLM's one shape; every mlx-lm width (the first twice: Adam's state appears after it).
        for _ in range(3):
            trainer._one_step()
        first_of_width = {}
        for t, ln in epoch:
            first_of_width.setdefault(t.shape[1], (t, ln))
        for t, ln in [epoch[0], *first_of_width.values()]:
            peer_step(t, ln)
        del epoch

        def forgellm_block() -> tuple[float, int, int]:
            t0, useful = time.perf_counter(), 0
            for _ in range(steps):
                useful += trainer._one_step()[1]
            return time.perf_counter() - t0, useful, steps * args.batch * args.seq

        def mlx_lm_block(seed: int) -> tuple[float, int, int]:
            t0, useful, computed = time.perf_counter(), 0, 0
            for tokens, lengths in epoch_batches(dataset, args.batch, max_seq, seed):
                peer_step(tokens, lengths)
                useful += useful_targets(tokens, lengths)
                computed += tokens.shape[0] * (tokens.shape[1] - 1)
            return time.perf_counter() - t0, useful, computed

        load = wait_for_quiet(args.max_load, args.max_wait)
        print(f"load average {load['load1']} at the start of timing{'' if load['quiet'] else ' (NOT quiet)'}")
        pairs = []
        for p in range(args.pairs):
            order = ["forgellm", "mlx-lm"] if p % 2 == 0 else ["mlx-lm", "forgellm"]
            pair = {}
            for tool in order:
                seconds, useful, computed = forgellm_block() if tool == "forgellm" else mlx_lm_block(seed=p + 1)
                pair[tool] = {"seconds": seconds, "useful_per_s": useful / seconds}
                pair[tool]["computed_per_s"] = computed / seconds
            pair["ratio"] = pair["forgellm"]["useful_per_s"] / pair["mlx-lm"]["useful_per_s"]
            pair["load1"] = round(os.getloadavg()[0], 2)
            pairs.append(pair)
            print(
                f"  pair {p + 1} ({' then '.join(order)}): ForgeLLM {pair['forgellm']['useful_per_s']:,.0f}, "
                f"mlx-lm {pair['mlx-lm']['useful_per_s']:,.0f} useful tokens/s, ratio {pair['ratio']:.3f}, "
                f"load {pair['load1']}",
                flush=True,
            )
    ratios = np.array([p["ratio"] for p in pairs])
    med = {t: float(np.median([p[t]["useful_per_s"] for p in pairs])) for t in ("forgellm", "mlx-lm")}
    comp = {t: float(np.median([p[t]["computed_per_s"] for p in pairs])) for t in ("forgellm", "mlx-lm")}
    train_tokens = report["tokens"]["train"]
    trainable = {"forgellm": report["splits"]["train"]["targets"], "mlx-lm": useful_epoch}
    if ratios.min() > 1 or ratios.max() < 1:
        side = f"every pair {'above' if ratios.min() > 1 else 'below'} 1"
    else:
        side = "pairs on both sides of 1: within noise"
    result = {
        "corpus": args.corpus,
        "sort_for_mlx_lm": args.sort_for_mlx_lm,
        "fine_tune_type": args.fine_tune_type,
        "seq": args.seq,
        "batch": args.batch,
        "steps_per_block": steps,
        "pairs": pairs,
        "ratio_median": float(np.median(ratios)),
        "ratio_min_max": [float(ratios.min()), float(ratios.max())],
        "ratio_iqr": [float(np.quantile(ratios, 0.25)), float(np.quantile(ratios, 0.75))],
        "verdict": side,
        "train_tokens": train_tokens,
        "trainable_targets": trainable,
        "forgellm_rows_per_epoch": report["splits"]["train"]["rows"],
        "mlx_lm_rows_per_epoch": steps * args.batch,
        "mlx_lm_padding_fraction": 1 - useful_epoch / computed_epoch,
        "seconds": time.perf_counter() - started,
    }
    rows = [
        [
            "ForgeLLM (packed windows)",
            f"{med['forgellm']:,.0f}",
            f"{result['ratio_median']:.3f} ({ratios.min():.3f}-{ratios.max():.3f})",
            f"{comp['forgellm']:,.0f}",
            f"{trainable['forgellm']:,} of {train_tokens:,} ({100 * trainable['forgellm'] / train_tokens:.1f}%)",
            f"{result['forgellm_rows_per_epoch']} rows",
        ],
        [
            'mlx-lm {"text"} (truncate + pad)' + (", shortest first" if args.sort_for_mlx_lm else ""),
            f"{med['mlx-lm']:,.0f}",
            "1.000",
            f"{comp['mlx-lm']:,.0f}",
            f"{trainable['mlx-lm']:,} of {train_tokens:,} ({100 * trainable['mlx-lm'] / train_tokens:.1f}%)",
            f"{result['mlx_lm_rows_per_epoch']} rows, {100 * result['mlx_lm_padding_fraction']:.1f}% padding",
        ],
    ]
    print(
        f"\n{blas_line()}; {model_path.name}, {args.fine_tune_type} ({layers} blocks), {args.corpus} corpus, "
        f"batch {args.batch} x {args.seq}; {args.pairs} ABBA pairs of {steps}-step blocks; ratio per pair: "
        f"{', '.join(f'{r:.3f}' for r in ratios)}; median {result['ratio_median']:.3f}, IQR "
        f"{result['ratio_iqr'][0]:.3f}-{result['ratio_iqr'][1]:.3f}: {side}; {result['seconds']:.0f} s in all\n"
    )
    print(
        md_table(
            [
                "path",
                "useful tokens/s (median of pairs)",
                "ratio: median of pairs (range)",
                "positions computed/s",
                "train-split tokens it can train on",
                "one epoch",
            ],
            rows,
        )
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

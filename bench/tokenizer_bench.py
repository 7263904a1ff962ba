"""How much of data preparation is the tokenizer, and how fast the tokenizer alone is.

    python bench/tokenizer_bench.py --tokenizer models/smollm2-135m-instruct     # 20 MB corpus
    LD_PRELOAD=/path/libmimalloc.so.3 python bench/tokenizer_bench.py ...         # another allocator
    python bench/tokenizer_bench.py --tokenizer ... --piece-chars 65536           # 64 KB pieces
    python bench/cpu_profile.py --target tokenizer --tokenizer ...                # perf: malloc/free share

Builds the same synthetic corpus as data_bench.py, runs `forgellm.data.prepare` once under cProfile
(time inside the fast tokenizer's `encode_batch_fast` vs everything else), then times the tokenizer
alone (`encode_batch_fast` on the same pieces the pipeline sends it) --repeats times. Without
--tokenizer it trains the tiny model's tokenizer like data_bench.py does. --piece-chars sets the size of
the pieces long texts are cut into (`forgellm.data.tokens.PIECE_CHARS`, 4096 by default; 65536 gives
the 64 KB pieces of the BENCHMARKS.md rows before the cut was made smaller, each cut still checked).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_bench import ROOT, make_corpus, tokenizer_folder  # noqa: E402

sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--tokenizer", help="folder of a saved Hugging Face tokenizer (default: the tiny model's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--piece-chars", type=int, help="piece size in characters (default: the library's, 4096)")
    args = ap.parse_args()
    import forgellm.data.tokens

    if args.piece_chars:
        forgellm.data.tokens.PIECE_CHARS = args.piece_chars
    from transformers import AutoTokenizer

    from forgellm.config import from_dict
    from forgellm.data import prepare
    from forgellm.data.tokens import tokenizer_info

    with tempfile.TemporaryDirectory(prefix="forgellm-tok-bench-") as tmp:
        scratch = Path(tmp)
        (scratch / "corpus").mkdir()
        size = make_corpus(scratch / "corpus", args.mb) / 1e6
        tok = AutoTokenizer.from_pretrained(str(tokenizer_folder(args.tokenizer, scratch)))
        cfg = from_dict({"data": str(scratch / "corpus"), "max_seq_length": 256, "val_fraction": 0.01})
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        profile.runcall(prepare, cfg, tok, cache_dir=scratch / "cache")
        total = time.perf_counter() - t0
        stats = pstats.Stats(profile).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
        encode = sum(v[2] for k, v in stats.items() if "encode_batch_fast" in k[2])
        texts = [p.read_text(encoding="utf-8") for p in sorted((scratch / "corpus").iterdir())]
    info = tokenizer_info(tok)
    pieces, _ = info._split_pieces(texts)  # the pieces the pipeline sends (cut places checked, ~4 KB)
    backend = info.backend
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        backend.encode_batch_fast(pieces, add_special_tokens=False)
        rates.append(size / (time.perf_counter() - t0))
    result = {
        "piece_chars": info.piece_chars,
        "corpus_mb": round(size, 1),
        "prepare_s": round(total, 2),
        "prepare_mb_per_s": round(size / total, 2),
        "encode_share": round(encode / total, 3),
        "encode_only_mb_per_s": [round(r, 2) for r in rates],
    }
    print(
        f"pieces of {info.piece_chars} characters; "
        f"prepare: {size / total:.2f} MB/s ({total:.2f} s), {100 * encode / total:.0f}% inside encode_batch_fast; "
        f"tokenizer alone: {', '.join(f'{r:.2f}' for r in rates)} MB/s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

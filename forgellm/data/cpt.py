"""Continued pre-training: ingest → tokenize to disk → split by document → mix → windows.

Nothing is held in memory but one batch of text and the per-document lengths and hashes: tokens go
to a file as they are made, and windows are written from those files in order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..errors import DataError, ForgeError
from .ingest import read_documents, sniff
from .pack import Segments, cpt_rows, in_rows_per_source, write_windows
from .records import FileEntry, Problems
from .report import display, histogram, rejected_files
from .split import rank, val_count
from .tokens import TokenizerInfo

BATCH_CHARS = 2 << 20  # text per tokenizer call: many pieces keep every core busy; memory stays ~100 MB
BATCH_DOCS = 4096
DOMAIN, GENERAL = 0, 1


@dataclass
class Corpus:
    """A tokenized corpus on disk: all documents' tokens back to back, plus per-document facts."""

    files: list[FileEntry]
    token_file: Path
    lengths: np.ndarray  # tokens per kept document (int64)
    digests: np.ndarray  # first 8 bytes of each kept document's content hash (uint64)
    read: int = 0
    empty: int = 0
    duplicates: int = 0

    @property
    def documents(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], self.lengths.cumsum()[:-1]]).astype(np.int64)

    def segments(self, index: np.ndarray, source: int) -> Segments:
        return Segments(np.full(len(index), source, np.int64), self.starts[index], self.lengths[index])

    def summary(self) -> dict[str, int]:
        return {"read": self.read, "kept": self.documents, "empty": self.empty, "duplicates": self.duplicates}


@dataclass
class _Batch:
    texts: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    chars: int = 0


def tokenize_corpus(
    paths: list[Path], key: str, text_field: str, info: TokenizerInfo, problems: Problems, work: Path
) -> Corpus:
    """Read `paths` (the files found for config key `key`), drop empty and duplicate documents, tokenize."""
    files = [sniff(p, "cpt") for p in paths]
    corpus = Corpus(files, work / f"{key}.tokens", np.zeros(0, np.int64), np.zeros(0, np.uint64))
    lengths: list[np.ndarray] = []
    digests: list[bytes] = []
    seen: set[bytes] = set()
    batch = _Batch()
    with open(corpus.token_file, "wb") as out:
        for entry in files:
            if entry.status != "read":
                continue
            entry.documents = 0
            for doc in read_documents(entry, text_field, problems):
                corpus.read += 1
                if not doc.text:
                    corpus.empty += 1
                    continue
                digest = hashlib.blake2b(doc.text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                if digest in seen:
                    corpus.duplicates += 1
                    continue
                seen.add(digest)
                entry.documents += 1
                batch.texts.append(doc.text)
                batch.digests.append(digest)
                batch.chars += len(doc.text)
                if batch.chars >= BATCH_CHARS or len(batch.texts) >= BATCH_DOCS:
                    _flush(batch, info, out, lengths, digests)
                    batch = _Batch()
        _flush(batch, info, out, lengths, digests)
    corpus.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    corpus.digests = np.frombuffer(b"".join(d[:8] for d in digests), dtype=np.uint64).copy()
    return corpus


def _flush(batch: _Batch, info: TokenizerInfo, out, lengths: list, digests: list) -> None:
    if not batch.texts:
        return
    flat, doc_lengths = info.encode_documents(batch.texts)
    out.write(flat.tobytes())
    lengths.append(doc_lengths)
    digests.extend(batch.digests)


# ------------------------------------------------------------------------------------------------
# Split


def split_documents(
    corpus: Corpus, cfg: TrainConfig, where: str, problems: Problems | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation documents; no document is on both sides.

    Raises:
        DataError: when no document is usable (each file named with its reason).
        ForgeError: when either side would get no document or less than one window of tokens.
    """
    n, L = corpus.documents, cfg.max_seq_length
    if n == 0:
        raise _nothing_usable(corpus, where, problems or Problems())
    n_val = val_count(n, cfg.val_fraction)
    if n - n_val < 1:
        raise ForgeError(
            f"{n} document(s) cannot be split: val_fraction {cfg.val_fraction} sends {n_val} to validation "
            "and leaves none for training",
            where,
            "add documents (each file, or each .jsonl/.csv record, is one document) or split large files",
        )
    order = rank(corpus.digests, cfg.seed)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    for name, index in (("training", train), ("validation", val)):
        tokens = int(corpus.lengths[index].sum())
        if tokens < L + 1:
            raise _too_small(name, len(index), tokens, cfg, where)
    return train, val


def _too_small(name: str, docs: int, tokens: int, cfg: TrainConfig, where: str) -> ForgeError:
    L = cfg.max_seq_length
    fix = f"lower max_seq_length (now {L}) or add documents"
    if name == "validation":
        fix = f"raise val_fraction (now {cfg.val_fraction}), " + fix
    return ForgeError(
        f"the {name} split gets {docs} document(s) with {tokens} tokens, fewer than one window of "
        f"max_seq_length + 1 = {L + 1} tokens",
        where,
        fix,
    )


def _nothing_usable(corpus: Corpus, where: str, problems: Problems, files_key: str = "files") -> DataError:
    """The error for a corpus with no document left, naming every file and why it gave nothing; its
    report part keeps the file list under `files_key` (the report's key for this corpus)."""
    skipped = [f for f in corpus.files if f.status != "read"]
    detail = f"{len(corpus.files)} file(s) found, {len(skipped)} skipped"
    if corpus.read:
        detail += f", {corpus.read} record(s) read of which {corpus.empty} empty and {corpus.duplicates} duplicates"
    reasons = "".join(f"\n  - {line}" for line in rejected_files(corpus.files, problems))
    return DataError(
        f"no usable documents ({detail}){reasons}",
        where,
        "add .txt/.md/.jsonl/... files with text, or fix the files named above",
        report={files_key: [f.as_dict() for f in corpus.files]},
    )


# ------------------------------------------------------------------------------------------------
# Mixing and windows


def general_segments(general: Corpus, needed: int, seed: int) -> tuple[Segments, float]:
    """Exactly `needed` tokens of the general corpus, whole documents in seeded order, repeating the
    corpus when it is too small; the last piece is cut (general text is filler, not the user's data).

    Returns:
        (segments, how many times the general corpus is used, e.g. 2.5).
    """
    if needed <= 0:
        return Segments(*(np.zeros(0, np.int64) for _ in range(3))), 0.0
    order = np.random.default_rng(seed).permutation(general.documents)
    cycles = math.ceil(needed / general.tokens)
    index = np.tile(order, cycles)
    lengths = general.lengths[index]
    last = int(np.searchsorted(lengths.cumsum(), needed))  # first piece that reaches `needed`
    index, lengths = index[: last + 1], lengths[: last + 1].copy()
    lengths[-1] -= int(lengths.sum()) - needed
    segs = Segments(np.full(len(index), GENERAL, np.int64), general.starts[index], lengths)
    return segs, needed / general.tokens


def _mix(cfg: TrainConfig, train: Segments, general: Corpus, problems: Problems) -> tuple[Segments, dict[str, Any]]:
    """Add general tokens so that the domain share of training tokens is `mixture.ratio`.

    Raises:
        DataError: when the general corpus has no usable document.
    """
    if general.documents == 0:
        where = f"mixture.general: {display(cfg.mixture.general)}"
        raise _nothing_usable(general, where, problems, files_key="general_files")
    needed = round(train.total * (1 - cfg.mixture.ratio) / cfg.mixture.ratio)
    extra, uses = general_segments(general, needed, cfg.seed)
    mixture = {
        "general": display(cfg.mixture.general),
        "ratio_requested": cfg.mixture.ratio,
        "general_tokens_available": general.tokens,
        "general_tokens_used": needed,
        "general_repeats": round(uses, 3),
        "general_documents": general.summary(),
    }
    return Segments.concat([train, extra]), mixture


def build(
    cfg: TrainConfig, info: TokenizerInfo, problems: Problems, out: Path, work: Path, files: dict[str, list[Path]]
) -> dict[str, Any]:
    """Prepare CPT data into `out` (train_tokens.npy, val_tokens.npy); returns the CPT report parts.

    Args:
        files: Discovered files per config key: "data" and, when mixing, "mixture.general".
    """
    domain = tokenize_corpus(files["data"], "data", cfg.text_field, info, problems, work)
    train_idx, val_idx = split_documents(domain, cfg, f"data: {display(cfg.data)}", problems)
    train = domain.segments(train_idx, DOMAIN)
    general, mixture = None, None
    if "mixture.general" in files:
        general = tokenize_corpus(files["mixture.general"], "mixture.general", cfg.text_field, info, problems, work)
        try:
            train, mixture = _mix(cfg, train, general, problems)
        except DataError as e:  # the domain files were fine; the report shows them beside the general ones
            e.report = {**(e.report or {}), "files": [f.as_dict() for f in domain.files]}
            raise
    # Interleave documents (and general pieces) so that every part of training sees the mix.
    train = train.permuted(np.random.default_rng(cfg.seed).permutation(len(train.length)))
    val = domain.segments(val_idx, DOMAIN)
    token_files = [domain.token_file, general.token_file if general else domain.token_file]
    L = cfg.max_seq_length
    write_windows(out / "train_tokens.npy", train, token_files, L)
    write_windows(out / "val_tokens.npy", val, token_files, L)
    train_in = in_rows_per_source(train, L, 2)
    val_in = in_rows_per_source(val, L, 2)
    if mixture:
        mixture["ratio_achieved"] = round(float(train_in[DOMAIN] / max(1, train_in.sum())), 5)
    return {
        "files": [f.as_dict() for f in domain.files],
        "general_files": [f.as_dict() for f in general.files] if general else [],
        "documents": {**domain.summary(), "train": len(train_idx), "val": len(val_idx)},
        "tokens": {
            "corpus": domain.tokens,
            "train": int(domain.lengths[train_idx].sum()),
            "val": int(domain.lengths[val_idx].sum()),
        },
        "splits": {"train": _split_report(train, train_in, L), "val": _split_report(val, val_in, L)},
        "yield": _yield(domain.tokens, int(train_in[DOMAIN]), int(val_in[DOMAIN])),
        "mixture": mixture,
        "lengths": histogram(domain.lengths, "tokens per document"),
    }


def _split_report(segs: Segments, in_rows: np.ndarray, seq_len: int) -> dict[str, Any]:
    rows = cpt_rows(segs.total, seq_len)
    return {
        "rows": rows,
        "documents": len(segs.length),
        "tokens": segs.total,
        "tokens_in_rows": int(in_rows.sum()),
        "targets": rows * seq_len,
        "remainder": segs.total - int(in_rows.sum()),
        "domain_tokens_in_rows": int(in_rows[DOMAIN]),
        "general_tokens_in_rows": int(in_rows[GENERAL]),
        "padding_fraction": 0.0,
    }


def _yield(corpus: int, train: int, val: int) -> dict[str, Any]:
    """How much of the user's corpus ends up in a row (train or validation); only remainders are lost."""
    return {
        "corpus_tokens": corpus,
        "train_tokens": train,
        "val_tokens": val,
        "unused_tokens": corpus - train - val,
        "fraction": round((train + val) / corpus, 5) if corpus else 0.0,
    }

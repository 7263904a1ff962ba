"""Instruction fine-tuning: read records → filter → template + mask → split by example → pack.

Every dropped record is counted under one reason (malformed, empty, duplicate, overlong,
template_error, no_trainable_tokens) and, except duplicates, listed as a problem with its file and line.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..errors import DataError, ForgeError
from .chat import TemplateError, assistant_spans, choose_template
from .formats import Empty, Example, Invalid, detect, normalise, unknown_format_fix
from .ingest import BadLine, Skip, iter_json_lines, load_json_items, sniff
from .pack import Packed, pack_examples
from .records import FileEntry, Problems
from .report import display, histogram, rejected_files
from .split import rank, val_count
from .tokens import TokenizerInfo

DROP_REASONS = ("malformed", "empty", "duplicate", "overlong", "template_error", "no_trainable_tokens")
ENCODE_BATCH = 1024


@dataclass
class Tokenized:
    """One example as token ids and a 0/1 mask (1 = trained), with the facts used for splitting."""

    ids: np.ndarray
    mask: np.ndarray
    digest: int
    file: str
    line: int


@dataclass
class Reading:
    """Examples read from all files, with per-reason drop counts so far."""

    examples: list[Example] = field(default_factory=list)
    read: int = 0
    dropped: Counter = field(default_factory=Counter)
    formats: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Reading and validation


def read_examples(files: list[FileEntry], problems: Problems) -> Reading:
    """Parse every IFT file; the first recognisable record fixes the file's format, every line is checked."""
    out = Reading()
    seen: set[bytes] = set()
    for entry in files:
        if entry.status != "read":
            continue
        kept_before = len(out.examples)
        try:
            _read_file(entry, _records(entry), problems, out, seen)
        except Skip as e:
            entry.status, entry.reason = "skipped", e.reason
            problems.add(entry.path, e.reason, e.fix)
        except OSError as e:
            entry.status, entry.reason = "skipped", f"cannot read: {e.strerror or e}"
            problems.add(entry.path, entry.reason, "check the file exists and is readable")
        entry.documents = len(out.examples) - kept_before
    return out


def _records(entry: FileEntry) -> Any:
    path = Path(entry.path)
    if entry.kind == "jsonl":
        entry.encoding = "utf-8"
        return iter_json_lines(path)
    return load_json_items(path, entry)


def _read_file(entry: FileEntry, records: Any, problems: Problems, out: Reading, seen: set[bytes]) -> None:
    file_format = None
    for line, record in records:
        out.read += 1
        if isinstance(record, BadLine):
            _drop(out, problems, entry, line, "malformed", record.what, record.fix)
            continue
        fmt = detect(record)
        if fmt is None:
            _drop(out, problems, entry, line, "malformed", "record matches no supported format", unknown_format_fix())
            continue
        file_format = file_format or fmt
        if fmt != file_format:
            what = f"record is in {fmt} format but this file is {file_format} (from its first record)"
            _drop(out, problems, entry, line, "malformed", what, "use one format per file")
            continue
        _accept(record, fmt, entry, line, problems, out, seen)
    out.formats[display(entry.path)] = file_format or "unknown"


def _accept(record: dict, fmt: str, entry: FileEntry, line: int, problems: Problems, out: Reading, seen: set) -> None:
    try:
        messages, text = normalise(record, fmt)
    except Invalid as e:
        _drop(out, problems, entry, line, "malformed", e.what, e.fix)
        return
    except Empty as e:
        _drop(out, problems, entry, line, "empty", str(e), "write the answer, or remove the line")
        return
    canonical = json.dumps({"messages": messages, "text": text}, sort_keys=True, ensure_ascii=False)
    digest = hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    if digest in seen:
        out.dropped["duplicate"] += 1
        return
    seen.add(digest)
    out.examples.append(Example(messages, text, entry.path, line, fmt, int.from_bytes(digest[:8], "little")))


def _drop(out: Reading, problems: Problems, entry: FileEntry, line: int, reason: str, what: str, fix: str) -> None:
    out.dropped[reason] += 1
    problems.add(entry.path, what, fix, line)


# ------------------------------------------------------------------------------------------------
# Template, tokens, mask


@dataclass
class Encoding:
    """Examples turned into tokens, with drop counts and template facts."""

    kept: list[Tokenized] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    truncated: int = 0
    fallbacks: int = 0


def encode_examples(
    examples: list[Example], cfg: TrainConfig, info: TokenizerInfo, template: str, problems: Problems
) -> Encoding:
    """Render, tokenize and mask every example (in batches, for the fast tokenizer); apply `overlong`."""
    enc = Encoding()
    for start in range(0, len(examples), ENCODE_BATCH):
        chunk = examples[start : start + ENCODE_BATCH]
        encoded = {**_encode_plain(chunk, info), **_encode_chats(chunk, cfg, info, template, enc, problems)}
        for i, example in enumerate(chunk):
            if i in encoded:
                _keep(example, *encoded[i], cfg, enc, problems)
    return enc


def _encode_plain(chunk: list[Example], info: TokenizerInfo) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Text-format examples: tokenized like CPT documents (BOS/EOS framing), every token trained."""
    plain = [i for i, e in enumerate(chunk) if e.text is not None]
    if not plain:
        return {}
    flat, lengths = info.encode_documents([chunk[i].text for i in plain])
    pieces = np.split(flat, lengths.cumsum()[:-1])
    return {i: (ids, np.ones(len(ids), dtype=np.uint8)) for i, ids in zip(plain, pieces, strict=True)}


def _encode_chats(
    chunk: list[Example], cfg: TrainConfig, info: TokenizerInfo, template: str, enc: Encoding, problems: Problems
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Chat examples: render with the template, find assistant spans, tokenize with offsets, mask."""
    rendered: dict[int, tuple[str, list[tuple[int, int]]]] = {}
    for i, example in enumerate(chunk):
        if example.messages is None:
            continue
        try:
            text, spans, fallback = assistant_spans(info.hf, example.messages, template)
        except TemplateError as e:
            enc.dropped["template_error"] += 1
            fix = "fix the conversation (many templates need strictly alternating user/assistant turns)"
            problems.add(example.file, f"chat template failed: {e}", fix, example.line)
            continue
        enc.fallbacks += fallback
        rendered[i] = (text, spans)
    if not rendered:
        return {}
    encodings = info.encode_with_offsets([text for text, _ in rendered.values()])
    return {
        i: (np.asarray(ids, dtype=np.int32), _mask(offsets, spans, cfg.mask_prompt))
        for (i, (_, spans)), (ids, offsets) in zip(rendered.items(), encodings, strict=True)
    }


def _mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], mask_prompt: bool) -> np.ndarray:
    """1 for every token overlapping an assistant span (all tokens when mask_prompt is off)."""
    if not mask_prompt:
        return np.ones(len(offsets), dtype=np.uint8)
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(len(off), dtype=bool)
    for start, end in spans:
        mask |= (off[:, 1] > start) & (off[:, 0] < end)
    return mask.astype(np.uint8)


def _keep(
    example: Example, ids: np.ndarray, mask: np.ndarray, cfg: TrainConfig, enc: Encoding, problems: Problems
) -> None:
    width = cfg.max_seq_length + 1
    if len(ids) > width:
        if cfg.overlong == "drop":
            enc.dropped["overlong"] += 1
            what = f"example has {len(ids)} tokens, more than max_seq_length + 1 = {width}"
            problems.add(
                example.file, what, "raise max_seq_length, shorten it, or set overlong: truncate", example.line
            )
            return
        ids, mask = ids[:width], mask[:width]
        enc.truncated += 1
    if not mask[1:].any():
        enc.dropped["no_trainable_tokens"] += 1
        what = "no assistant token is left to train on" + (" after truncation" if len(ids) == width else "")
        problems.add(example.file, what, "raise max_seq_length or shorten the prompt", example.line)
        return
    enc.kept.append(Tokenized(ids, mask, example.digest, example.file, example.line))


# ------------------------------------------------------------------------------------------------
# Build


def split_examples(kept: list[Tokenized], cfg: TrainConfig, where: str) -> tuple[list[Tokenized], list[Tokenized]]:
    """Seeded, content-keyed split by example (same rule as CPT documents).

    Raises:
        ForgeError: when no example is usable or too few remain for both splits.
    """
    n = len(kept)
    if n == 0:
        raise ForgeError("no usable instruction examples", where, "the report lists why each line was dropped")
    n_val = val_count(n, cfg.val_fraction)
    if n - n_val < 1:
        raise ForgeError(
            f"{n} example(s) cannot be split: val_fraction {cfg.val_fraction} sends {n_val} to validation "
            "and leaves none for training",
            where,
            "add examples (at least 2) or lower val_fraction",
        )
    order = rank(np.array([k.digest for k in kept], dtype=np.uint64), cfg.seed)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [kept[i] for i in train], [kept[i] for i in val]


def _nothing_usable(
    files: list[FileEntry], reading: Reading, enc: Encoding, problems: Problems, where: str
) -> DataError:
    """The error for data with no usable example, naming every file and why it gave nothing."""
    dropped = {r: reading.dropped.get(r, 0) + enc.dropped.get(r, 0) for r in DROP_REASONS}
    counts = ", ".join(f"{reason} {n}" for reason, n in dropped.items() if n) or "none"
    skipped = sum(f.status != "read" for f in files)
    detail = f"{len(files)} file(s) found, {skipped} skipped, {reading.read} record(s) read; dropped: {counts}"
    reasons = "".join(f"\n  - {line}" for line in rejected_files(files, problems))
    return DataError(
        f"no usable instruction examples ({detail}){reasons}",
        where,
        f"fix the files named above; {unknown_format_fix()}",
        report={"files": [f.as_dict() for f in files]},
    )


def save_split(out: Path, name: str, packed: Packed) -> None:
    np.save(out / f"{name}_tokens.npy", packed.tokens)
    np.save(out / f"{name}_mask.npy", packed.mask)
    np.save(out / f"{name}_lengths.npy", packed.lengths)


def build(
    cfg: TrainConfig, info: TokenizerInfo, problems: Problems, out: Path, paths: list[Path]
) -> tuple[dict[str, Any], str]:
    """Prepare IFT data from the discovered `paths` into `out`; returns (report parts, chat template used)."""
    files = [sniff(p, "ift") for p in paths]
    reading = read_examples(files, problems)
    template, source = choose_template(info.hf)
    enc = encode_examples(reading.examples, cfg, info, template, problems)
    where = f"data: {display(cfg.data)}"
    if not enc.kept:
        raise _nothing_usable(files, reading, enc, problems, where)
    train, val = split_examples(enc.kept, cfg, where)
    packs = {}
    for name, part in (("train", train), ("val", val)):
        packs[name] = pack_examples([(k.ids, k.mask) for k in part], cfg.max_seq_length, info.pad_id)
        save_split(out, name, packs[name])
    dropped = {r: reading.dropped.get(r, 0) + enc.dropped.get(r, 0) for r in DROP_REASONS}
    lengths = np.array([len(k.ids) for k in enc.kept], dtype=np.int64)
    parts = {
        "files": [f.as_dict() for f in files],
        "examples": {
            "read": reading.read,
            "kept": len(enc.kept),
            "train": len(train),
            "val": len(val),
            "truncated": enc.truncated,
            "dropped": dropped,
        },
        "tokens": {
            "examples": int(lengths.sum()),
            "train": sum(len(k.ids) for k in train),
            "val": sum(len(k.ids) for k in val),
        },
        "splits": {
            name: _split_report(p, len(part)) for (name, p), part in zip(packs.items(), (train, val), strict=True)
        },
        "ift": {
            "formats": reading.formats,
            "chat_template_source": source,
            "chat_template": template,
            "mask_prompt": cfg.mask_prompt,
            "overlong": cfg.overlong,
            "template_fallbacks": enc.fallbacks,
        },
        "lengths": histogram(lengths, "tokens per example"),
    }
    return parts, template


def _split_report(packed: Packed, examples: int) -> dict[str, Any]:
    size = int(packed.tokens.size)
    return {
        "rows": int(packed.tokens.shape[0]),
        "examples": examples,
        "tokens_in_rows": int(packed.lengths.sum()),
        "targets": int(packed.mask[:, 1:].sum()),
        "padding": packed.padding,
        "padding_fraction": round(packed.padding / size, 5) if size else 0.0,
    }

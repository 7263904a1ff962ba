"""The data report: small helpers that build its parts, and `format_report` that prints it for people.

The report is plain JSON-serialisable data (the trainer writes it as data_report.json, the UI plots
`lengths`); its keys are listed in `REPORT_KEYS` and documented in `forgellm/data/__init__.py`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import PROJECT_ROOT
from .records import FileEntry, Problems

SCHEMA_VERSION = 1
HIST_BINS = 20
REPORT_KEYS = (
    "schema_version",
    "train_type",
    "data",
    "max_seq_length",
    "seed",
    "tokenizer",
    "files",
    "general_files",
    "files_summary",
    "general_files_summary",
    "problems",
    "problems_total",
    "notes",
    "documents",
    "examples",
    "tokens",
    "splits",
    "yield",
    "mixture",
    "ift",
    "lengths",
    "cache",
    "seconds",
    "mb_per_s",
)


def display(value: Any) -> str:
    """A path as the user wrote it relative to the project folder when it lies inside it."""
    if isinstance(value, (list, tuple)):
        return ", ".join(display(v) for v in value)
    path = Path(value)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except (ValueError, RuntimeError, OSError):  # outside the project, or a symbolic link loop (3.11 raises)
        return str(path)


def histogram(lengths: np.ndarray, unit: str) -> dict[str, Any]:
    """Length summary for plotting: bin edges and counts (log2 bins when lengths span > 50x), plus stats."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if not len(lengths):
        return {"unit": unit, "count": 0, "scale": "linear", "edges": [], "counts": []}
    lo, hi = int(lengths.min()), int(lengths.max())
    if hi > 50 * max(lo, 1):
        scale = "log2"
        edges = 2 ** np.arange(int(np.floor(np.log2(max(lo, 1)))), int(np.ceil(np.log2(hi + 1))) + 1)
    else:
        scale = "linear"
        edges = np.unique(np.linspace(lo, hi + 1, HIST_BINS + 1).round().astype(np.int64))
    counts, edges = np.histogram(lengths, bins=edges)
    return {
        "unit": unit,
        "count": int(len(lengths)),
        "min": lo,
        "max": hi,
        "mean": round(float(lengths.mean()), 1),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
        "scale": scale,
        "edges": [int(e) for e in edges],
        "counts": [int(c) for c in counts],
    }


def files_summary(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of files read and skipped, and how many were skipped for each reason."""
    skipped = [f for f in files if f["status"] != "read"]
    reasons = Counter(_reason_class(f["reason"]) for f in skipped)
    return {
        "found": len(files),
        "read": len(files) - len(skipped),
        "skipped": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
    }


MAX_REJECTED_LISTED = 10  # files named in a "no usable data" message; the data report lists them all


def rejected_files(files: list[FileEntry], problems: Problems) -> list[str]:
    """One line per file that gave nothing usable, saying why: its skip reason, or its first problem.

    For "no usable documents" messages, so the reasons are in the error itself, not only in a report.
    """
    if not files:
        return ["no files found (files and folders whose names start with '.' are never read)"]
    lines = []
    for entry in files:
        first, count = problems.first_for(entry.path)
        if entry.status != "read":  # skipped while reading (not by its name or first bytes): the reader's fix
            fix = f"; fix: {first.fix}" if first is not None and first.what == entry.reason else ""
            lines.append(f"{display(entry.path)}: {entry.reason}{fix}")
            continue
        if first is None:
            lines.append(f"{display(entry.path)}: read, but every record was empty or a duplicate")
            continue
        where = f"{display(entry.path)}:{first.line}" if first.line is not None else display(entry.path)
        more = f" (and {count - 1} more problem(s) in this file)" if count > 1 else ""
        lines.append(f"{where}: {first.what}{more}; fix: {first.fix}")
    if len(lines) > MAX_REJECTED_LISTED:
        rest = len(lines) - MAX_REJECTED_LISTED
        lines = [*lines[:MAX_REJECTED_LISTED], f"... and {rest} more file(s): the data report lists them all"]
    return lines


def _reason_class(reason: str | None) -> str:
    # "unsupported file type '.png'" and "... '.zip'" are one reason in the summary.
    reason = reason or "unknown"
    return reason.split(" '")[0].split(" (")[0].split(":")[0]


# ------------------------------------------------------------------------------------------------
# Text


def format_report(report: dict[str, Any]) -> str:
    """Render a data report as text for the CLI (`python -m forgellm data CONFIG.yaml`).

    Args:
        report: The dict from `prepare(...).report` (or a loaded data_report.json).

    Returns:
        A multi-line, human-readable summary: files, documents or examples, tokens per split,
        yield, mixture, padding, lengths, problems and notes.
    """
    lines = [f"Data report ({report.get('train_type', '?')}): {report.get('data', '?')}"]
    for part in (_files, _documents, _examples, _splits, _yield, _mixture, _template, _lengths, _problems, _notes):
        block = part(report)
        if block:
            lines += ["", *block]
    cache = report.get("cache") or {}
    if cache:
        state = "reused (no re-tokenizing)" if cache.get("hit") else "built"
        lines += ["", f"Cache: {state} at {cache.get('path')}"]
    return "\n".join(lines)


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def _files(r: dict[str, Any]) -> list[str]:
    out = []
    for label, key in (("Files", "files_summary"), ("General corpus files", "general_files_summary")):
        s = r.get(key)
        if s:
            out.append(f"{label}: {_n(s['found'])} found, {_n(s['read'])} read, {_n(s['skipped'])} skipped")
    for f in [*r.get("files", []), *r.get("general_files", [])]:
        if f["status"] != "read":
            out.append(f"  skipped {f['path']}: {f['reason']}")
        elif f.get("reason"):
            out.append(f"  note    {f['path']}: {f['reason']}")
    return out


def _documents(r: dict[str, Any]) -> list[str]:
    d = r.get("documents")
    if not d:
        return []
    return [
        f"Documents: {_n(d['kept'])} kept of {_n(d['read'])} read "
        f"({_n(d['duplicates'])} exact duplicates dropped, {_n(d['empty'])} empty)",
        f"  split by document: {_n(d['train'])} train, {_n(d['val'])} validation (none on both sides)",
    ]


def _examples(r: dict[str, Any]) -> list[str]:
    e = r.get("examples")
    if not e:
        return []
    dropped = ", ".join(f"{k} {_n(v)}" for k, v in e["dropped"].items() if v) or "none"
    out = [f"Examples: {_n(e['kept'])} kept of {_n(e['read'])} read; dropped: {dropped}"]
    if e.get("truncated"):
        out.append(f"  {_n(e['truncated'])} over-long example(s) truncated to max_seq_length + 1 tokens")
    out.append(f"  split by example: {_n(e['train'])} train, {_n(e['val'])} validation")
    formats = (r.get("ift") or {}).get("formats") or {}
    for path, fmt in formats.items():
        out.append(f"  format {fmt:<10} {path}")
    return out


def _splits(r: dict[str, Any]) -> list[str]:
    splits = r.get("splits") or {}
    out = [f"Rows of max_seq_length + 1 = {r.get('max_seq_length', 0) + 1} tokens:"]
    for name, s in splits.items():
        line = f"  {name:<5} {_n(s['rows'])} rows, {_n(s['tokens_in_rows'])} tokens, {_n(s['targets'])} trained targets"
        if "remainder" in s:
            line += f", remainder left out {_n(s['remainder'])}"
        line += f", padding {s['padding_fraction']:.1%}"
        out.append(line)
    return out if splits else []


def _yield(r: dict[str, Any]) -> list[str]:
    y = r.get("yield")
    if not y:
        return []
    return [
        f"Yield: {y['fraction']:.2%} of {_n(y['corpus_tokens'])} corpus tokens reach a row "
        f"({_n(y['train_tokens'])} train, {_n(y['val_tokens'])} validation, {_n(y['unused_tokens'])} unused)"
    ]


def _mixture(r: dict[str, Any]) -> list[str]:
    m = r.get("mixture")
    if not m:
        return []
    out = [
        f"Mixture: domain share of training tokens {m['ratio_achieved']:.2%} (requested {m['ratio_requested']:.2%})",
        f"  general corpus {m['general']}: "
        f"{_n(m['general_tokens_used'])} of {_n(m['general_tokens_available'])} tokens used",
    ]
    if m.get("general_repeats", 0) > 1:
        out.append(f"  the general corpus is too small and is repeated {m['general_repeats']}x")
    return out


def _template(r: dict[str, Any]) -> list[str]:
    ift = r.get("ift") or {}
    if not ift.get("chat_template_source"):
        return []
    source = ift["chat_template_source"]
    text = "the tokenizer's own" if source == "tokenizer" else "ForgeLLM's default (the tokenizer has none)"
    return [f"Chat template: {text}; mask_prompt={ift.get('mask_prompt')}"]


def _lengths(r: dict[str, Any]) -> list[str]:
    h = r.get("lengths") or {}
    if not h.get("count"):
        return []
    out = [f"Lengths ({h['unit']}): min {h['min']}, median {h['median']:g}, p90 {h['p90']:g}, max {h['max']}"]
    peak = max(h["counts"]) or 1
    for (lo, hi), c in zip(itertools.pairwise(h["edges"]), h["counts"], strict=True):
        if c:  # empty bins are in the data for plotting; in text they only add lines
            out.append(f"  {lo:>8}-{hi - 1:<8} {'#' * max(1, round(30 * c / peak)):<30} {c}")
    return out


def _problems(r: dict[str, Any]) -> list[str]:
    problems = r.get("problems") or []
    if not problems:
        return []
    out = [f"Problems: {r.get('problems_total', len(problems))} (each was skipped; the rest loaded)"]
    for p in problems:
        where = f"{p['file']}:{p['line']}" if p.get("line") is not None else p["file"]
        out.append(f"  {where}: {p['what']}\n      fix: {p['fix']}")
    return out


def _notes(r: dict[str, Any]) -> list[str]:
    notes = r.get("notes") or []
    return ["Notes:", *(f"  - {n}" for n in notes)] if notes else []

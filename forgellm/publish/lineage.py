"""Data lineage for a model card: which files a run read, their SHA-256 now, and whether they are the
bytes it trained on; plus the local paths and addresses a public card must not show.

A run records each file's size but not its SHA-256, so the hashes are computed when the card is
written. They are checked against the run's data-cache key (which hashes the bytes of every input
file): when it matches, the card says these are the bytes the model was trained on; when it does not
(a file, or ForgeLLM's data code, changed since), the card says the hashes describe the files as they
are now.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ForgeError
from ..paths import PROJECT_ROOT, home
from .markdown import cell, fmt, pct

MAX_FILES_LISTED = 200  # source files listed one by one; the rest are counted
_CHANGED_NOTES = ("missing now", "size changed since training")


@dataclass
class SourceFile:
    """One input file as the card lists it."""

    path: str  # as shown: relative to the project, else abbreviated (no local paths in a card)
    role: str  # data or general (the mixture's general corpus)
    status: str  # read or skipped
    size: int | None  # bytes when the run read it
    items: int | None  # documents (CPT) or records (IFT) taken from it
    sha256: str | None  # now; None when missing or unreadable
    note: str = ""  # missing now, size changed since training, or why it was skipped
    shown: str = ""  # the path as the data report wrote it (the key of its per-file facts)


def source_files(report: dict[str, Any]) -> list[SourceFile]:
    """The report's files with their SHA-256 computed now, and notes where a file is missing or resized."""
    out = []
    for role, key in (("data", "files"), ("general", "general_files")):
        for entry in report.get(key) or []:
            out.append(_source_file(entry, role))
    return out


def _source_file(entry: dict[str, Any], role: str) -> SourceFile:
    shown = entry.get("path", "")
    path = _report_path(shown)
    digest, note = None, ""
    if entry.get("status") != "read":
        note = f"skipped: {entry.get('reason')}"
    elif not path.is_file():
        note = "missing now"
    else:
        digest = sha256_file(path)
        if entry.get("size") is not None and path.stat().st_size != entry["size"]:
            note = "size changed since training"
    status, size, items = entry.get("status", "?"), entry.get("size"), entry.get("documents")
    return SourceFile(public_path(shown), role, status, size, items, digest, note, shown)


def _report_path(shown: str) -> Path:
    """A report path (relative to the project folder when inside it) as a real path."""
    path = Path(shown)
    return path if path.is_absolute() else PROJECT_ROOT / path


def sha256_file(path: Path) -> str | None:
    """Hex SHA-256 of a file's bytes; None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def data_unchanged(config: dict[str, Any], report: dict[str, Any]) -> bool | None:
    """True when today's input files give the run's data-cache key (the same bytes were trained on).

    False when the key differs (a file or ForgeLLM's data code changed since training); None when the
    run recorded too little to check.
    """
    from .. import config as config_module
    from ..data import cache

    recorded = (report.get("cache") or {}).get("key")
    fingerprint = (report.get("tokenizer") or {}).get("fingerprint")
    if not recorded or not fingerprint or not config:
        return None
    try:
        cfg = config_module.from_dict(config)
    except ForgeError:
        return None
    files = {"data": [_report_path(f["path"]) for f in report.get("files") or []]}
    if cfg.train_type == "cpt" and cfg.mixture.general and cfg.mixture.ratio < 1:
        files["mixture.general"] = [_report_path(f["path"]) for f in report.get("general_files") or []]
    return cache.cache_key(cfg, fingerprint, files) == recorded


# ---- the card's Data section -------------------------------------------------------------------------


def data_section(report: dict[str, Any] | None, config: dict[str, Any]) -> str:
    """The `## Data` section: sources and counts, the mixture, each file with its hash, and what the hashes mean."""
    if not report:
        return "## Data\n\nThe run folder holds no data report (data_report.json), so the data is not described."
    files = source_files(report)
    parts = ["## Data", _summary(report, config), _mixture(report), _files_table(files, report)]
    parts.append(_hash_note(report, config, files))
    return "\n\n".join(p for p in parts if p)


def _summary(report: dict[str, Any], config: dict[str, Any]) -> str:
    data = public_path(report.get("data") or config.get("data") or "?")
    files = report.get("files") or []
    summary = report.get("files_summary") or {
        "read": sum(f.get("status") == "read" for f in files),
        "skipped": sum(f.get("status") != "read" for f in files),
    }
    tokens = report.get("tokens") or {}
    lines = [f"- Source: `{data}`: {summary.get('read', '?')} file(s) read, {summary.get('skipped', 0)} skipped"]
    if report.get("documents"):
        d = report["documents"]
        lines.append(
            f"- Documents: {d.get('kept')} kept of {d.get('read')} read ({d.get('duplicates')} exact duplicates "
            f"and {d.get('empty')} empty dropped), split by document: {d.get('train')} train, {d.get('val')} validation"
        )
        lines.append(
            f"- Tokens: {fmt(tokens.get('corpus'))} in the corpus; {fmt(tokens.get('train'))} train, "
            f"{fmt(tokens.get('val'))} validation (tokens are counted per split, not per file)"
        )
    if report.get("examples"):
        e = report["examples"]
        dropped = ", ".join(f"{k} {v}" for k, v in (e.get("dropped") or {}).items() if v) or "none"
        lines.append(
            f"- Examples: {e.get('kept')} kept of {e.get('read')} read (dropped: {dropped}), "
            f"split by example: {e.get('train')} train, {e.get('val')} validation"
        )
        lines.append(f"- Tokens: {fmt(tokens.get('train'))} train, {fmt(tokens.get('val'))} validation")
    rows = (report.get("splits") or {}).get("train") or {}
    if rows:
        lines.append(f"- Training rows: {fmt(rows.get('rows'))} of up to {report.get('max_seq_length')} + 1 tokens")
    return "\n".join(lines)


def _mixture(report: dict[str, Any]) -> str:
    m = report.get("mixture")
    if not m:
        return ""
    repeats = f"; repeated {m['general_repeats']}x (too small)" if (m.get("general_repeats") or 0) > 1 else ""
    return (
        f"Mixture: a general corpus (`{public_path(m.get('general') or '?')}`) is mixed in. Domain share of the "
        f"training tokens: requested {pct(m.get('ratio_requested'))}, achieved {pct(m.get('ratio_achieved'))}; "
        f"general tokens used {fmt(m.get('general_tokens_used'))} "
        f"of {fmt(m.get('general_tokens_available'))}{repeats}."
    )


def _files_table(files: list[SourceFile], report: dict[str, Any]) -> str:
    if not files:
        return ""
    formats = (report.get("ift") or {}).get("formats") or {}  # IFT: the record format found in each file
    unit = "records" if report.get("train_type") == "ift" else "documents"
    mixed = any(f.role == "general" for f in files)
    header = ["file", *(["corpus"] if mixed else []), "bytes", unit, "SHA-256", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in files[:MAX_FILES_LISTED]:
        role = [f.role] if mixed else []
        note = "; ".join(n for n in (f"format {formats[f.shown]}" if f.shown in formats else "", f.note) if n)
        cells = [f"`{f.path}`", *role, fmt(f.size), fmt(f.items), f"`{f.sha256}`" if f.sha256 else "-", note]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    if len(files) > MAX_FILES_LISTED:
        rest = files[MAX_FILES_LISTED:]
        size = sum(f.size or 0 for f in rest)
        lines.append(f"\n... and {len(rest)} more files ({size:,} bytes), not listed.")
    return "\n".join(lines)


def _hash_note(report: dict[str, Any], config: dict[str, Any], files: list[SourceFile]) -> str:
    note = "SHA-256 hashes were computed when this card was written (the run records sizes, not hashes). "
    verdict = data_unchanged(config, report)
    if verdict:
        return note + "They are the bytes the model was trained on: the files give the run's data-cache key again."
    changed = [f.path for f in files if f.note in _CHANGED_NOTES]
    why = f" ({len(changed)} file(s) missing or resized)" if changed else ""
    if verdict is False:
        return note + (
            f"They describe the files as they are now: these files do not give the run's data-cache key{why}, "
            "so a file (or ForgeLLM's data code) changed after training."
        )
    return note + f"Whether a file changed after training cannot be checked: the run recorded no data-cache key{why}."


# ---- what a public card may show ---------------------------------------------------------------------


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without local details: absolute paths shortened, host addresses counted, not listed."""
    out = json.loads(json.dumps(config))  # a deep copy of plain data
    for key in ("model", "output_dir", "hostfile"):
        if isinstance(out.get(key), str):
            out[key] = public_path(out[key])
    data = out.get("data")
    out["data"] = [public_path(d) for d in data] if isinstance(data, list) else public_path(str(data or ""))
    mixture = out.get("mixture")
    if isinstance(mixture, dict) and isinstance(mixture.get("general"), str):
        mixture["general"] = public_path(mixture["general"])
    if out.get("hosts"):
        out["hosts"] = f"{len(out['hosts'])} host(s), addresses not published"
    return out


def public_path(value: str) -> str:
    """A path fit for a public card: relative paths as they are; an absolute path inside the project
    or ForgeLLM's home relative to it; any other absolute path shortened to `.../<name>`."""
    if not value or not (value.startswith(("/", "~")) or Path(value).is_absolute()):
        return value
    path = Path(value).expanduser()
    for root in (PROJECT_ROOT, home()):
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            continue
    return f".../{path.name}"

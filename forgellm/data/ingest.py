"""Ingestion: which files to read, how to decode them, and the documents inside each one.

Every reader is a generator, so a large corpus streams through one file (or one line) at a time.
Problems (bad encoding, malformed JSON, a missing field) are recorded against the file and line and the
reader moves on: one bad file or line never stops the others.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MISSING, ForgeError, path_kind
from ..paths import PROJECT_ROOT
from .htmltext import visible_text
from .records import Document, FileEntry, Problems

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".org", ".adoc", ".tex"}
CODE_SUFFIXES = {
    ".py",
    ".pyi",
    ".js",
    ".mjs",
    ".cjs",
    ".ts",
    ".tsx",
    ".jsx",
    ".java",
    ".kt",
    ".kts",
    ".scala",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".cxx",
    ".hpp",
    ".hh",
    ".cs",
    ".go",
    ".rs",
    ".rb",
    ".php",
    ".swift",
    ".m",
    ".mm",
    ".r",
    ".jl",
    ".lua",
    ".pl",
    ".pm",
    ".sh",
    ".bash",
    ".zsh",
    ".fish",
    ".ps1",
    ".sql",
    ".css",
    ".scss",
    ".sass",
    ".less",
    ".vue",
    ".svelte",
    ".dart",
    ".ex",
    ".exs",
    ".erl",
    ".hs",
    ".ml",
    ".clj",
    ".el",
    ".vim",
    ".yaml",
    ".yml",
    ".toml",
    ".ini",
    ".cfg",
    ".conf",
    ".xml",
    ".proto",
    ".graphql",
    ".cmake",
    ".gradle",
    ".zig",
    ".nim",
    ".f90",
    ".asm",
    ".s",
    ".bat",
    ".tf",
}
KIND_BY_SUFFIX = {
    **{s: "text" for s in TEXT_SUFFIXES | CODE_SUFFIXES},
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".pdf": "pdf",
    ".docx": "docx",
}
# Kinds an instruction-tuning run reads (records with fields, not running text).
IFT_KINDS = {"jsonl", "json"}
# Optional readers: the package to import and the pip line to show when it is missing.
OPTIONAL = {"pdf": ("pypdf", "pip install pypdf"), "docx": ("docx", "pip install python-docx")}
SNIFF_BYTES = 8192

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


class Skip(Exception):
    """A file (or line) that cannot be used; carries the reason and the fix for the report."""

    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


# ------------------------------------------------------------------------------------------------
# Discovery


def resolve(path: str | Path) -> Path:
    """Resolve a config path: relative paths are relative to the project folder."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def as_paths(value: str | Path | list[str | Path]) -> list[Path]:
    """Accept one path or a list of paths (a file list) and resolve each."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [resolve(v) for v in values]


def discover(paths: list[Path], key: str = "data") -> list[Path]:
    """Every non-hidden file under `paths` (folders recursively), sorted for a deterministic order.

    Raises:
        ForgeError: when a path does not exist.
    """
    found: dict[Path, Path] = {}  # resolved -> as found: a file listed twice (or inside a listed folder) is read once
    for root in paths:
        if root.is_file():
            found.setdefault(root.resolve(), root)
        elif root.is_dir():
            files = (p for p in root.rglob("*") if p.is_file())
            for path in sorted(p for p in files if not _hidden(p.relative_to(root))):
                found.setdefault(path.resolve(), path)
        else:
            raise ForgeError(path_problem(root), f"{key}: {root}", "point it at a folder or file of documents")
    return list(found.values())


def path_problem(path: Path) -> str:
    """Why `path` is neither a file nor a folder: missing, a broken or looping link, or a special file
    (a FIFO or a device is never read: reading it could block or never end)."""
    kind = path_kind(path)
    return "data path does not exist" if kind == MISSING else f"data path is {kind}, not a file or folder"


def _hidden(relative: Path) -> bool:
    # Dot-files and dot-folders (.git, .DS_Store, editor swap files) are never user documents.
    return any(part.startswith(".") for part in relative.parts)


def kind_of(path: Path) -> str:
    """The reader for a file, from its suffix; files without a suffix are read as text."""
    if not path.suffix:
        return "text"
    return KIND_BY_SUFFIX.get(path.suffix.lower(), "unsupported")


def sniff(path: Path, train_type: str = "cpt") -> FileEntry:
    """Decide from the name and the first bytes whether ingestion will read a file, and with what."""
    kind = kind_of(path)
    try:
        size = path.stat().st_size
        head = _read_head(path)
    except OSError as e:
        return FileEntry(str(path), kind, 0, "skipped", f"cannot read: {e.strerror or e}")
    entry = FileEntry(str(path), kind, size)
    blank = size <= len(head) and not head.strip()  # the whole file is whitespace
    reason = _skip_reason(path, kind, b"" if blank else head, train_type)
    if reason:
        entry.status, entry.reason = "skipped", reason
    return entry


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)


def _skip_reason(path: Path, kind: str, head: bytes, train_type: str) -> str | None:
    if kind == "unsupported":
        return f"unsupported file type {path.suffix!r}"
    if train_type == "ift" and kind not in IFT_KINDS:
        return "instruction tuning reads .jsonl/.json records; raw text needs train_type: cpt"
    if not head:
        return "empty file"
    if kind in OPTIONAL:
        module, pip = OPTIONAL[kind]
        return None if _importable(module) else f"reading .{kind} needs the optional package: {pip}"
    if _is_binary(head):
        return "binary file (not text)"
    return None


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _is_binary(head: bytes) -> bool:
    """NUL bytes (outside UTF-16/32 text) or many control characters mean the file is not text."""
    if any(head.startswith(bom) for bom, name in _BOMS if name != "utf-8-sig"):
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls > max(8, len(head) // 100)


# ------------------------------------------------------------------------------------------------
# Decoding


def decode(data: bytes) -> tuple[str, str]:
    """Decode file bytes: a BOM wins, then UTF-8, then a detected encoding.

    Returns:
        (text, encoding name).

    Raises:
        Skip: when a byte-order mark does not match the bytes after it.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(name), name
            except UnicodeDecodeError as e:
                raise Skip(f"has a {name} byte-order mark but is not valid {name} ({e.reason})", _RESAVE) from e
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    return _decode_detected(data)


_RESAVE = "re-save the file as UTF-8 (most editors: Save with Encoding > UTF-8)"


def _decode_detected(data: bytes) -> tuple[str, str]:
    """Legacy Western text (cp1252) is by far the likeliest when it reads plausibly; otherwise ask
    charset-normalizer (shipped with requests/transformers), whose guesses on short Latin text are weak."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = None
    if text is not None and _plausible_western(text):
        return text, "cp1252"
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        from_bytes = None
    best = from_bytes(data).best() if from_bytes is not None else None
    if best is not None and best.encoding:
        return str(best), best.encoding
    if text is not None:
        return text, "cp1252"
    return data.decode("latin-1"), "latin-1"  # decodes any bytes; the report says it was a guess


_WESTERN_PUNCTUATION = set(
    "\u201c\u201d\u2018\u2019\u2013\u2014\u2026\u20ac\xa3\xa9\xae\xb0\xa7\xab\xbb\xb7\xd7\xf7\xbf\xa1\xa0"
)


def _plausible_western(text: str) -> bool:
    """Accented letters inside mostly-ASCII words, not text made of them (Cyrillic read as cp1252)."""
    extra = [c for c in text if ord(c) > 127]
    if any(not (c.isalpha() or c in _WESTERN_PUNCTUATION) for c in extra):
        return False
    letters = sum(c.isalpha() for c in text)
    return sum(c.isalpha() for c in extra) <= 0.3 * max(letters, 1)


def normalize(text: str) -> str:
    """One newline convention and no surrounding whitespace, so duplicates compare equal."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


# ------------------------------------------------------------------------------------------------
# Readers: each yields Documents and records problems


def read_documents(entry: FileEntry, text_field: str, problems: Problems) -> Iterator[Document]:
    """Yield the CPT documents of one file; problems go to `problems`, never up as exceptions."""
    reader = _READERS[entry.kind]
    try:
        yield from reader(Path(entry.path), entry, text_field, problems)
    except Skip as e:
        _skip(entry, problems, e.reason, e.fix)
    except OSError as e:
        _skip(entry, problems, f"cannot read: {e.strerror or e}", "check the file exists and is readable")
    except Exception as e:  # noqa: BLE001 - a third-party parser (pdf/docx/csv) failed on one file: keep going
        _skip(entry, problems, f"could not be parsed ({type(e).__name__}: {e})", "check the file opens elsewhere")


def _skip(entry: FileEntry, problems: Problems, reason: str, fix: str) -> None:
    entry.status, entry.reason = "skipped", reason
    problems.add(entry.path, reason, fix)


def _decoded(path: Path, entry: FileEntry) -> str:
    text, encoding = decode(path.read_bytes())
    entry.encoding = encoding
    if encoding not in ("utf-8", "utf-8-sig"):
        entry.reason = f"not UTF-8: decoded as {encoding}; re-save as UTF-8 if characters look wrong"
    return text


def _read_text(path: Path, entry: FileEntry, text_field: str, problems: Problems) -> Iterator[Document]:
    text = normalize(_decoded(path, entry))
    if text:
        yield Document(text, entry.path)
    else:
        raise Skip("empty file (only whitespace)", "remove it or add text")


def _read_html(path: Path, entry: FileEntry, text_field: str, problems: Problems) -> Iterator[Document]:
    text = normalize(visible_text(_decoded(path, entry)))
    if text:
        yield Document(text, entry.path)
    else:
        raise Skip("HTML page has no visible text", "remove it, or export the page's text")


def _read_pdf(path: Path, entry: FileEntry, text_field: str, problems: Problems) -> Iterator[Document]:
    from pypdf import PdfReader

    pages = (page.extract_text() for page in PdfReader(str(path)).pages)
    text = normalize("\n\n".join(p for p in pages if p))
    if not text:
        raise Skip("PDF has no extractable text (scanned images?)", "run OCR on it or export its text")
    yield Document(text, entry.path)


def _read_docx(path: Path, entry: FileEntry, text_field: str, problems: Problems) -> Iterator[Document]:
    import docx

    text = normalize("\n".join(p.text for p in docx.Document(str(path)).paragraphs))
    if not text:
        raise Skip("Word document has no text", "remove it or add text")
    yield Document(text, entry.path)


@dataclass
class BadLine:
    """A JSONL line that could not be parsed; readers record it as a problem."""

    what: str
    fix: str


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value or BadLine) for each non-blank line of a JSONL file."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield number, BadLine("line is not UTF-8 text", _RESAVE)
            except json.JSONDecodeError as e:
                yield number, BadLine(f"not valid JSON ({e.msg} at column {e.colno})", _JSON_FIX)


_JSON_FIX = 'make each line one complete JSON object, e.g. {"text": "..."}'


def load_json_items(path: Path, entry: FileEntry) -> list[tuple[int, Any]]:
    """Parse a .json file that holds a list (or one object); items are numbered from 1 as 'lines'."""
    text, entry.encoding = decode(path.read_bytes())
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise Skip(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})", _JSON_FIX) from e
    items = value if isinstance(value, list) else [value]
    return list(enumerate(items, start=1))


def _read_jsonl(path: Path, entry: FileEntry, text_field: str, problems: Problems) -> Iterator[Document]:
    entry.encoding = "utf-8"
    for line, value in iter_json_lines(path):
        if isinstance(value, BadLine):
            problems.add(entry.path, value.what, value.fix, line)
        else:
            yield from _record_text(value, text_field, entry, problems, line)


def _read_json(path: Path, entry: FileEntry, text_field: str, problems: Problems) -> Iterator[Document]:
    for line, value in load_json_items(path, entry):
        yield from _record_text(value, text_field, entry, problems, line)


def _record_text(value: Any, field: str, entry: FileEntry, problems: Problems, line: int) -> Iterator[Document]:
    """A JSON record is a bare string or an object whose `field` is a string."""
    if isinstance(value, dict):
        if field not in value:
            problems.add(entry.path, f"record has no {field!r} field (keys: {_keys(value)})", _field_fix(value), line)
            return
        value = value[field]
    if not isinstance(value, str):
        what = f"{field!r} must be a string, got {type(value).__name__}"
        problems.add(entry.path, what, f'write the text as a JSON string: {{"{field}": "..."}}', line)
        return
    yield Document(normalize(value), entry.path, line)  # empty text is counted by the caller


def _keys(record: dict) -> str:
    return ", ".join(map(str, list(record)[:8])) or "none"


def _field_fix(record: dict) -> str:
    strings = [k for k, v in record.items() if isinstance(v, str)]
    if strings:
        return f"set text_field: {strings[0]} in the config, or rename the field"
    return "give every record a text field (see text_field in the config)"


def _read_csv(path: Path, entry: FileEntry, text_field: str, problems: Problems) -> Iterator[Document]:
    text, entry.encoding = decode(path.read_bytes())
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # Long documents in one cell are the point of a text column; the limit is restored afterwards
    # because it is process-wide.
    previous = csv.field_size_limit(1 << 30)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        columns = reader.fieldnames or []
        if text_field not in columns:
            fix = f"set text_field to one of {columns} in the config" if columns else "add a header row"
            raise Skip(f"no {text_field!r} column (columns: {', '.join(columns) or 'none'})", fix)
        for row in reader:
            yield Document(normalize(row.get(text_field) or ""), entry.path, reader.line_num)
    finally:
        csv.field_size_limit(previous)


_READERS = {
    "text": _read_text,
    "html": _read_html,
    "json": _read_json,
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "pdf": _read_pdf,
    "docx": _read_docx,
}


# ------------------------------------------------------------------------------------------------
# Public listing


def scan_files(path: str | Path | list[str | Path], train_type: str = "cpt") -> list[FileEntry]:
    """List what ingestion would read under `path`, with a status per file (for a file browser).

    Reads only each file's first few KB: enough to spot empty, binary and unsupported files.

    Args:
        path: A folder (searched recursively), a file, or a list of them; relative paths resolve
            against the project folder.
        train_type: "cpt" reads text, HTML, JSON, JSONL, CSV (and PDF/DOCX with their extras);
            "ift" reads only JSONL/JSON records.

    Returns:
        One FileEntry per file, sorted by path within each folder; `status` is "read" or "skipped".

    Raises:
        ForgeError: when a path does not exist.
    """
    return [sniff(p, train_type) for p in discover(as_paths(path))]

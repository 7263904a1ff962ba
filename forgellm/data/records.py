"""Typed records that flow through the data pipeline and out to the trainer, the CLI and the UI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Split:
    """One split of prepared data, as fixed-length rows the trainer can batch without reshaping.

    Attributes:
        tokens: int32 array of shape (rows, max_seq_length + 1). The trainer feeds `row[:-1]` and
            predicts `row[1:]`.
        mask: uint8 array of the same shape, or None. `mask[:, 1:]` weights each target; None means
            every position 1..L is a target (CPT windows).
        lengths: int32 array (rows,) of non-padding tokens per row, or None when no row is padded.
            Not needed for training; `render_example` uses it to tell padding from prompt.
    """

    tokens: np.ndarray
    mask: np.ndarray | None = None
    lengths: np.ndarray | None = None

    @property
    def rows(self) -> int:
        """Number of rows (training sequences) in the split."""
        return int(self.tokens.shape[0])

    def __len__(self) -> int:
        return self.rows


@dataclass
class PreparedData:
    """What `prepare` returns: both splits, the report and the chat template used (IFT)."""

    train: Split
    val: Split
    report: dict[str, Any]
    chat_template: str | None = None


@dataclass
class Problem:
    """Something wrong with one file or one line; collected in the report instead of stopping the run."""

    file: str
    what: str
    fix: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "what": self.what, "fix": self.fix}

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.what} (fix: {self.fix})"


@dataclass
class FileEntry:
    """One file that ingestion would read or skip (what `scan_files` lists and the report keeps).

    Attributes:
        path: The file's path as given or found.
        kind: Reader used: text, html, json, jsonl, csv, pdf, docx, or "unsupported".
        size: Size in bytes.
        status: "read" when it will be (or was) read, "skipped" otherwise.
        reason: Why it was skipped, or a note (e.g. a guessed encoding); None when nothing to say.
        encoding: Text encoding used, when known.
        documents: Documents (CPT) or examples (IFT) taken from it; None before reading.
    """

    path: str
    kind: str
    size: int
    status: str = "read"
    reason: str | None = None
    encoding: str | None = None
    documents: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "size": self.size,
            "status": self.status,
            "reason": self.reason,
            "encoding": self.encoding,
            "documents": self.documents,
        }


@dataclass
class Document:
    """One CPT document (a file, or one record of a .json/.jsonl/.csv file)."""

    text: str
    file: str
    line: int | None = None


@dataclass
class Problems:
    """Problems collected while reading, capped per file so one broken file cannot flood the report."""

    per_file_cap: int = 20
    items: list[Problem] = field(default_factory=list)
    total: int = 0
    _per_file: dict[str, int] = field(default_factory=dict)

    def add(self, file: str, what: str, fix: str, line: int | None = None) -> None:
        self.total += 1
        seen = self._per_file.get(file, 0)
        self._per_file[file] = seen + 1
        if seen < self.per_file_cap:
            self.items.append(Problem(file, what, fix, line))

    def first_for(self, file: str) -> tuple[Problem | None, int]:
        """The first problem recorded for `file` and how many there were in all."""
        first = next((p for p in self.items if p.file == file), None)
        return first, self._per_file.get(file, 0)

    def as_list(self) -> list[dict[str, Any]]:
        out = [p.as_dict() for p in self.items]
        for file, count in self._per_file.items():
            if count > self.per_file_cap:
                more = count - self.per_file_cap
                out.append(
                    {
                        "file": file,
                        "line": None,
                        "what": f"... and {more} more problem(s) in this file",
                        "fix": "fix the lines above first; the rest are likely the same mistake",
                    }
                )
        return out

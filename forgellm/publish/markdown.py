"""Number and table formatting for the Markdown of a model card."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """A number as a card shows it: ints with thousands separators, floats to `digits` significant places."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) < 1e-3 or abs(value) >= 1e5:
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def loss(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "?"


def cell(value: Any) -> str:
    """A table cell: a `|` or a line break inside would end the cell or the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: list[tuple[str, str]]) -> str:
    """A two-column table without a header row."""
    return "| | |\n|---|---|\n" + "\n".join(f"| {cell(k)} | {cell(v)} |" for k, v in rows)

"""A model card as a file: its YAML front matter, and whether ForgeLLM may replace it.

A card ForgeLLM writes ends with a marker comment holding the SHA-256 of the text above it. A
README.md may be replaced only when it is absent, is mlx-lm's placeholder (front matter only:
`mlx_lm`'s save writes one into every fused folder), or is a ForgeLLM card whose text still matches
its marker. A README.md without the marker, or one edited after ForgeLLM wrote it, is the user's and
is kept as it is (`card_state` tells which).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

CARD_FILE = "README.md"
MARKER = "forgellm-card"
_MARKER_RE = re.compile(r"\n<!-- forgellm-card sha256:([0-9a-f]{64}) -->\n*\Z")
# huggingface_hub's REGEX_YAML_BLOCK (repocard.py), anchored: the block the Hub reads as the card's metadata.
_FRONT_MATTER_RE = re.compile(r"\A\s*---(?:\r\n|\r|\n)([\S\s]*?)(?:\r\n|\r|\n)---[ \t]*(?:\r\n|\n|\Z)")
# The keys of the front-matter-only README.md that mlx-lm's save writes into every fused folder.
_PLACEHOLDER_KEYS = {"language", "library_name", "pipeline_tag", "tags", "base_model"}
# card_state values: README.md files that write_card may replace, and those it keeps.
REPLACEABLE_STATES = ("absent", "placeholder", "generated")
KEPT_STATES = ("edited", "user")


def parse_front_matter(text: str | None) -> dict[str, Any] | None:
    """The YAML front matter of a README.md text as a mapping; None when the text has none.

    Raises:
        ValueError: when a front matter block is opened but not closed, is not valid YAML, or is not a
            mapping (the message says which).
    """
    text = text or ""
    match = _FRONT_MATTER_RE.match(text)
    if match is None:
        if text.lstrip().startswith("---\n") or text.lstrip().startswith("---\r\n"):
            raise ValueError("the front matter has no closing --- line")
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as e:
        raise ValueError(f"the front matter is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("the front matter is not a YAML mapping of `key: value` lines")
    return data


def read_front_matter(text: str | None) -> dict[str, Any] | None:
    """The YAML front matter of a README.md text, or None when it has none or it is not a valid mapping."""
    try:
        return parse_front_matter(text)
    except ValueError:
        return None


def card_body(text: str) -> str:
    """The text after the front matter (all of it when there is none)."""
    match = _FRONT_MATTER_RE.match(text)
    return text[match.end() :] if match else text


def read_text(path: Path) -> str | None:
    """A file's UTF-8 text, or None when it is missing or not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def card_state(readme: Path) -> str:
    """What a README.md is: `absent`, `placeholder` (mlx-lm's, front matter only), `generated` (a
    ForgeLLM card, unedited), `edited` (a ForgeLLM card changed since) or `user` (anything else)."""
    text = read_text(Path(readme))
    if text is None:
        return "absent" if not Path(readme).exists() else "user"
    match = _MARKER_RE.search(text)
    if match:
        return "generated" if _digest(text[: match.start()]) == match.group(1) else "edited"
    meta = read_front_matter(text)
    placeholder = meta is not None and meta.get("library_name") == "mlx" and set(meta) <= _PLACEHOLDER_KEYS
    return "placeholder" if placeholder and not card_body(text).strip() else "user"


def sign(text: str) -> str:
    """Append the marker that lets a later write tell this card from one the user edited."""
    text = text.rstrip("\n") + "\n"
    return f"{text}\n<!-- {MARKER} sha256:{_digest(text)} -->\n"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

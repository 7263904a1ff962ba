"""On-disk cache of prepared data, keyed by everything that changes the result.

The key hashes: the contents of every input file, the tokenizer (vocabulary, merges, normalisation,
special tokens, chat template), the config keys that affect the data, and the pipeline's own source
code (so a fixed bug never serves stale rows). One entry is a folder of .npy files plus report.json,
written to a temporary folder and renamed into place, so an entry is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig
from .records import PreparedData, Split
from .report import display

HASH_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes; an unreadable file hashes by name so ingestion can report it."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
    except OSError as e:
        return f"unreadable:{e.errno}"
    return h.hexdigest()


def _code_digest() -> str:
    h = hashlib.blake2b(digest_size=8)
    for source in sorted(Path(__file__).parent.glob("*.py")):
        h.update(source.read_bytes())
    return h.hexdigest()


def data_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The config keys that change prepared data for this train_type (others never invalidate it)."""
    settings: dict[str, Any] = {
        "train_type": cfg.train_type,
        "max_seq_length": cfg.max_seq_length,
        "val_fraction": cfg.val_fraction,
        "seed": cfg.seed,
    }
    if cfg.train_type == "cpt":
        settings["text_field"] = cfg.text_field
        if cfg.mixture.general and cfg.mixture.ratio < 1:
            settings["mixture_ratio"] = cfg.mixture.ratio
    else:
        settings.update(mask_prompt=cfg.mask_prompt, overlong=cfg.overlong)
    return settings


def cache_key(cfg: TrainConfig, tokenizer_fingerprint: str, files: dict[str, list[Path]]) -> str:
    """Hex key of the prepared data for `cfg` over `files` (config key → discovered files)."""
    payload = {
        "code": _code_digest(),
        "tokenizer": tokenizer_fingerprint,
        "settings": data_settings(cfg),
        "files": {k: [[display(p), file_digest(p)] for p in paths] for k, paths in files.items()},
    }
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode("utf-8"), digest_size=16).hexdigest()


def load(folder: Path) -> PreparedData | None:
    """The cached entry in `folder`, memory-mapped; None when absent or unreadable (then it is rebuilt)."""
    report_file = folder / "report.json"
    if not report_file.is_file():
        return None
    try:
        report = json.loads(report_file.read_text(encoding="utf-8"))
        train, val = _split(folder, "train"), _split(folder, "val")
    except (OSError, ValueError):
        return None
    template = (report.get("ift") or {}).get("chat_template")
    return PreparedData(train, val, report, template)


def _split(folder: Path, name: str) -> Split:
    def array(kind: str) -> np.ndarray | None:
        path = folder / f"{name}_{kind}.npy"
        return np.load(path, mmap_mode="r") if path.is_file() else None

    tokens = array("tokens")
    if tokens is None:
        raise ValueError(f"{name}_tokens.npy missing")
    return Split(tokens, array("mask"), array("lengths"))

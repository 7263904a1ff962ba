"""The data pipeline's entry points: prepare, render_example and the CLI's data command."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from .. import paths
from ..atomic import atomic_folder, require_replaceable, write_json
from ..config import TrainConfig
from ..errors import DataError, ForgeError, custom_code_refusal
from . import cache, cpt, ift
from .ingest import as_paths, discover
from .records import PreparedData, Problems
from .report import SCHEMA_VERSION, display, files_summary, format_report
from .tokens import TokenizerInfo, hf_tokenizer, tokenizer_info


def prepare(cfg: TrainConfig, tokenizer: Any, cache_dir: Path | None = None) -> PreparedData:
    """Turn the documents named by `cfg` into fixed-length training and validation rows.

    CPT (`cfg.train_type == "cpt"`) reads text files, packs documents into windows of
    `max_seq_length + 1` tokens and optionally mixes in a general corpus; IFT reads instruction
    records, applies the chat template, masks prompts and packs whole examples. The result is cached:
    a second call with the same files, tokenizer and data settings reads it back without tokenizing.

    Args:
        cfg: The training config (data, text_field, val_fraction, max_seq_length, mixture,
            mask_prompt, overlong, train_type, seed).
        tokenizer: What `mlx_lm.load()` returns, or a Hugging Face fast tokenizer.
        cache_dir: Cache root; defaults to `paths.cache_dir() / "data"`.

    Returns:
        PreparedData with `train` and `val` splits (memory-mapped), the JSON-serialisable `report`
        and, for IFT, the chat template used.

    Raises:
        ForgeError: for anything the user must fix first (missing path, nothing usable, a corpus too
            small for the split, an unusable tokenizer, an unwritable cache). Problems with single
            files or lines do not raise: they are listed in the report.
    """
    try:
        return _prepare(cfg, tokenizer, Path(cache_dir) if cache_dir else paths.cache_dir() / "data")
    except ForgeError:
        raise
    except OSError as e:
        where = e.filename or "data cache"
        raise ForgeError(
            f"cannot read or write data files ({e.strerror or e})",
            str(where),
            "check the path is readable, the cache folder writable and the disk not full",
        ) from e
    except Exception as e:
        raise ForgeError(
            f"unexpected {type(e).__name__} while preparing data: {e}",
            f"data: {cfg.data}",
            "this is a ForgeLLM bug; please report it with the config and the traceback",
        ) from e


def _inputs(cfg: TrainConfig, root: Path) -> dict[str, list[Path]]:
    """Files per config key; the cache itself is never read as data (e.g. when `data` is the project)."""
    keys = {"data": cfg.data}
    if cfg.train_type == "cpt" and cfg.mixture.general and cfg.mixture.ratio < 1:
        keys["mixture.general"] = cfg.mixture.general
    root = root.resolve()
    return {k: [p for p in discover(as_paths(v), k) if not p.resolve().is_relative_to(root)] for k, v in keys.items()}


def _prepare(cfg: TrainConfig, tokenizer: Any, root: Path) -> PreparedData:
    started = time.perf_counter()
    info = tokenizer_info(tokenizer)
    files = _inputs(cfg, root)
    key = cache.cache_key(cfg, info.fingerprint, files)
    folder = root / key
    cached = cache.load(folder)
    if cached is not None:
        cached.report["cache"] = {"key": key, "hit": True, "path": str(folder)}
        return cached
    if folder.exists():  # a damaged entry of ours (a complete one loads): removed, then rebuilt
        require_replaceable(folder, "report.json")
        shutil.rmtree(folder)
    with atomic_folder(folder, replace_marker="report.json", keep_existing=True) as tmp:
        work = tmp / "work"
        work.mkdir()
        problems = Problems()
        try:
            if cfg.train_type == "cpt":
                parts = cpt.build(cfg, info, problems, tmp, work, files)
            else:
                parts, _template = ift.build(cfg, info, problems, tmp, files["data"])
        except DataError as e:  # nothing usable: the report of what was read goes with the error
            parts = {"files": [], **(e.report or {}), "error": e.message}
            e.report = _assemble(cfg, info, parts, problems, files, time.perf_counter() - started)
            raise
        shutil.rmtree(work)
        seconds = time.perf_counter() - started
        report = _assemble(cfg, info, parts, problems, files, seconds)
        report["cache"] = {"key": key, "hit": False, "path": str(folder)}
        write_json(tmp / "report.json", report)
    prepared = cache.load(folder)
    if prepared is None:  # the folder was just written: failing to read it back is a bug or a full disk
        raise ForgeError("prepared data could not be read back", str(folder), "check disk space and retry")
    return prepared


def _assemble(
    cfg: TrainConfig,
    info: TokenizerInfo,
    parts: dict[str, Any],
    problems: Problems,
    files: dict[str, list[Path]],
    seconds: float,
) -> dict[str, Any]:
    size = sum(f["size"] for f in [*parts["files"], *parts.get("general_files", [])] if f["status"] == "read")
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "train_type": cfg.train_type,
        "data": display(cfg.data),
        "max_seq_length": cfg.max_seq_length,
        "seed": cfg.seed,
        "tokenizer": {
            "name": info.name,
            "fingerprint": info.fingerprint,
            "eos_id": info.eos_id,
            "pad_id": info.pad_id,
            "vocab_size": info.backend.get_vocab_size(),
            "cuts": info.cuts,
            "inexact_cuts": info.inexact_cuts,
        },
        "general_files": [],
        "documents": None,
        "examples": None,
        "yield": None,
        "mixture": None,
        "ift": None,
        **parts,
    }
    for entry in [*report["files"], *report["general_files"]]:
        entry["path"] = display(entry["path"])
    report["files_summary"] = files_summary(report["files"])
    report["general_files_summary"] = files_summary(report["general_files"]) if "mixture.general" in files else None
    report["problems"] = problems.as_list()
    report["problems_total"] = problems.total
    for p in report["problems"]:
        p["file"] = display(p["file"])
    report["notes"] = _notes(report)
    report["seconds"] = round(seconds, 3)
    report["mb_per_s"] = round(size / 1e6 / seconds, 2) if seconds > 0 else None
    return report


def _notes(report: dict[str, Any]) -> list[str]:
    """Things the user should know that are not errors."""
    notes = []
    m = report.get("mixture")
    if m and m.get("general_repeats", 0) > 1:
        notes.append(
            f"the general corpus ({m['general_tokens_available']:,} tokens) is smaller than the "
            f"{m['general_tokens_used']:,} needed for ratio {m['ratio_requested']}: it is repeated "
            f"{m['general_repeats']}x; point mixture.general at more text to avoid repetition"
        )
    guessed = [f["path"] for f in report["files"] if f.get("encoding") not in (None, "utf-8", "utf-8-sig")]
    if guessed:
        notes.append(
            f"{len(guessed)} file(s) are not UTF-8 and were decoded with a detected encoding: {', '.join(guessed[:5])}"
        )
    cuts = report["tokenizer"]
    if cuts["inexact_cuts"]:
        notes.append(
            f"{cuts['inexact_cuts']} of {cuts['cuts']} cuts of long texts into pieces changed the tokens "
            "at the cut (no line or word boundary nearby where this tokenizer splits the same way): "
            "texts without spaces or line breaks, or a tokenizer that marks the start of each input"
        )
    ift_info = report.get("ift") or {}
    if ift_info.get("chat_template_source") == "default":
        notes.append(
            "the tokenizer has no chat template: ForgeLLM's default template was used and is stored "
            "with the run so chat and publishing use the same one"
        )
    if ift_info.get("template_fallbacks"):
        notes.append(
            f"{ift_info['template_fallbacks']} conversation(s) were masked by searching for the "
            "assistant text (the template's renderings are not prefixes of each other)"
        )
    return notes


# ------------------------------------------------------------------------------------------------
# What the model sees


def render_example(
    cfg: TrainConfig, tokenizer: Any, index: int, split: str = "train", prepared: PreparedData | None = None
) -> dict[str, Any]:
    """One row exactly as the model sees it, decoded, with trained and untrained parts told apart.

    Args:
        cfg: The training config (prepared data come from the cache when unchanged).
        tokenizer: The same tokenizer given to `prepare`.
        index: Row number in the split (0-based).
        split: "train" or "val".
        prepared: Already prepared data, to avoid looking it up again.

    Returns:
        {"split", "index", "rows", "tokens", "trained_tokens", "padding_tokens", "text",
        "segments": [{"text", "trained", "kind"}]} where kind is "trained" (a target), "context"
        (seen, not trained: a prompt, or the first token of a window) or "padding".

    Raises:
        ForgeError: for an unknown split or an index out of range.
    """
    if split not in ("train", "val"):
        raise ForgeError(f"unknown split {split!r}", "render_example", "use 'train' or 'val'")
    prepared = prepared or prepare(cfg, tokenizer)
    part = getattr(prepared, split)
    if not 0 <= index < part.rows:
        raise ForgeError(
            f"row {index} does not exist: the {split} split has {part.rows} rows",
            "render_example",
            f"pick an index from 0 to {part.rows - 1}",
        )
    kinds = _kinds(part, index)
    hf = hf_tokenizer(tokenizer)
    row = part.tokens[index]
    segments = []
    start = 0
    for end in range(1, len(kinds) + 1):
        if end == len(kinds) or kinds[end] != kinds[start]:
            text = hf.decode(row[start:end].tolist(), skip_special_tokens=False)
            segments.append({"text": text, "trained": kinds[start] == "trained", "kind": kinds[start]})
            start = end
    return {
        "split": split,
        "index": index,
        "rows": part.rows,
        "tokens": len(kinds),
        "trained_tokens": kinds.count("trained"),
        "padding_tokens": kinds.count("padding"),
        "text": "".join(s["text"] for s in segments),
        "segments": segments,
    }


def _kinds(part: Any, index: int) -> list[str]:
    width = part.tokens.shape[1]
    used = int(part.lengths[index]) if part.lengths is not None else width
    mask = part.mask[index] if part.mask is not None else [0] + [1] * (width - 1)
    return ["padding" if i >= used else "trained" if mask[i] else "context" for i in range(width)]


# ------------------------------------------------------------------------------------------------
# CLI


def data_command(cfg: TrainConfig, as_json: bool = False, tokenizer: Any = None) -> str:
    """What `python -m forgellm data CONFIG.yaml [--json]` prints: prepare the data, return the report.

    Args:
        cfg: The loaded config.
        as_json: Return the report as JSON instead of text.
        tokenizer: The model's tokenizer; when None it is loaded from `cfg.model` (a local folder, a
            built model under the models folder, or a Hub id already in the local cache).

    Raises:
        ForgeError: when the tokenizer cannot be loaded or the data cannot be prepared.
    """
    prepared = prepare(cfg, tokenizer if tokenizer is not None else load_tokenizer(cfg))
    if as_json:
        return json.dumps(prepared.report, indent=2, ensure_ascii=False)
    return format_report(prepared.report)


def load_tokenizer(cfg: TrainConfig) -> Any:
    """Load only the tokenizer of `cfg.model` (no weights), for data preparation on its own.

    The model folder is found exactly as training finds it (`models.registry.resolve_model`: a
    built-in model is built on first use, a Hub id is downloaded).

    Raises:
        ForgeError: when the model cannot be found or its tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    from ..models.registry import resolve_model

    folder = resolve_model(cfg.model)
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=cfg.trust_remote_code)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError, ValueError, HF hub errors...
        refusal = custom_code_refusal(e, folder, trusted_here=True)
        if refusal:
            raise refusal from e
        raise ForgeError(
            f"cannot load the tokenizer of model {cfg.model!r} ({type(e).__name__}: {e})",
            str(folder),
            "check that the model folder has tokenizer.json or tokenizer_config.json",
        ) from e

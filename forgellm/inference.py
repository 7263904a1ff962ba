"""Load a model (optionally with a run's adapter) and stream generations with mlx-lm's `stream_generate`.

Used by the CLI's `generate` and the app's Chat tab. Loaded models are cached (two at a time, so a
base model and a fine-tuned one can answer side by side) and generation is serialised with a lock:
one MLX computation at a time keeps memory predictable on a laptop.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runs
from .errors import ForgeError
from .models.registry import resolve_model

_CACHE_SIZE = 2
_cache: OrderedDict[tuple[str, str | None], LoadedModel] = OrderedDict()
_load_lock = threading.Lock()
# A plain Lock, not an RLock: Gradio may resume a generator on a different worker thread each step.
_generate_lock = threading.Lock()


@dataclass
class GenerationSettings:
    max_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    model_path: Path
    adapter_path: Path | None
    chat_template: str | None = None  # from the run folder when training used a default template

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Messages → prompt text through the tokenizer's template (or the run's stored one)."""
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if self.chat_template:
            kwargs["chat_template"] = self.chat_template
        elif not getattr(self.tokenizer, "chat_template", None):
            return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        return self.tokenizer.apply_chat_template(messages, **kwargs)


def load_for_chat(model: str, adapter: Path | str | None = None, checkpoint: str = "best") -> LoadedModel:
    """Load (or reuse) `model` with an optional adapter given as a run folder or checkpoint folder."""
    model_path = resolve_model(model)
    adapter_dir = runs.adapter_dir(Path(adapter), checkpoint) if adapter else None
    key = (str(model_path), str(adapter_dir) if adapter_dir else None)
    with _load_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        loaded = _load(model_path, adapter_dir)
        _cache[key] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return loaded


def _load(model_path: Path, adapter_dir: Path | None) -> LoadedModel:
    from mlx_lm.utils import load

    if adapter_dir is not None:
        _check_adapter_base(model_path, adapter_dir)
    try:
        model, tokenizer = load(str(model_path), adapter_path=str(adapter_dir) if adapter_dir else None)
    except ValueError as e:
        raise ForgeError(
            f"the adapter does not fit this base model: {e}",
            str(adapter_dir),
            "pick the base model the run was trained on (see its config.yaml)",
        ) from e
    template = runs.run_chat_template(adapter_dir) if adapter_dir else None
    return LoadedModel(model, tokenizer, model_path, adapter_dir, template)


def _check_adapter_base(model_path: Path, adapter_dir: Path) -> None:
    """Refuse an adapter trained on another base (a same-shaped copy of that base is accepted)."""
    try:
        trained_on = runs.base_model_of(adapter_dir)
    except ForgeError:  # its base cannot be found here: mlx-lm's load still rejects a mismatched shape
        return
    if trained_on.resolve() == model_path.resolve() or _config_shape(trained_on) == _config_shape(model_path):
        return
    name = runs.base_model_name(adapter_dir)
    raise ForgeError(
        f"this adapter was trained on {name}, not on {model_path.name}",
        str(adapter_dir),
        f"choose {name} as the base model",
    )


def _config_shape(model_path: Path) -> tuple | None:
    try:
        c = json.loads((model_path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return tuple(c.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"))


def stream(loaded: LoadedModel, prompt: str, settings: GenerationSettings) -> Iterator[Any]:
    """Yield mlx-lm `GenerationResponse` records (`.text` is the new piece; speed and finish reason ride along).

    Holds the generation lock while iterating: a caller that stops early must `close()` the generator
    (Gradio does so on cancel) or the lock is held until it is garbage-collected.
    """
    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    sampler = make_sampler(settings.temperature, top_p=settings.top_p, min_p=settings.min_p, top_k=settings.top_k)
    processors = make_logits_processors(
        repetition_penalty=settings.repetition_penalty if settings.repetition_penalty != 1.0 else None
    )
    with _generate_lock:
        if settings.seed is not None:
            mx.random.seed(settings.seed)
        yield from stream_generate(
            loaded.model,
            loaded.tokenizer,
            prompt,
            max_tokens=settings.max_tokens,
            sampler=sampler,
            logits_processors=processors,
        )


# ---- chat messages ---------------------------------------------------------------------------------


def message_text(content: Any) -> str:
    """A chat message's content as plain text.

    Gradio 6 delivers a Chatbot's messages to a handler with content as a list of parts
    (`[{"type": "text", "text": ...}]`); API callers send strings. Non-text parts are left out.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return str(content)


def chat_messages(history: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """A chat history → plain `{"role", "content"}` messages for the chat template."""
    return [
        {"role": m["role"], "content": message_text(m.get("content"))}
        for m in history
        if m.get("role") in ("user", "assistant", "system")
    ]

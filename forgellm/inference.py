"""Load a model (optionally with a run's adapter) and stream generations with mlx-lm's `stream_generate`.

Used by the CLI's `generate` and `chat`, and the app's Chat tab. Loaded models are cached two at a time,
keyed by (model folder, adapter folder), so a base model and a fine-tuned one can answer side by side.
mlx-lm's `load(..., adapter_path=...)` builds a fresh model and applies the adapter to that one, so the
base entry is never touched by an adapter. Generation is serialised with a lock: one MLX computation
at a time keeps memory predictable on a laptop.

The prompt format comes from the tokenizer, never from the model's name: a template typed by the
user, else the one the run stored (training used a default template), else the tokenizer's own; with
none of these the model continues plain text (see `LoadedModel.prompt_for`).
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import mlx_threads, runs
from .errors import ForgeError, custom_code_refusal
from .model_sources import resolve_chat_model

_CACHE_SIZE = 2
_cache: OrderedDict[tuple[str, str | None], LoadedModel] = OrderedDict()
_keys_by_request: dict[tuple[str, str, str], tuple[str, str | None]] = {}  # load_for_chat's arguments -> _cache key
_load_lock = threading.Lock()
# A plain Lock, not an RLock: Gradio may resume a generator on a different worker thread each step.
_generate_lock = threading.Lock()
# One flag per chat; every API call is a session of its own, so only the most recent are kept (a flag is
# used between a Send and the end of its stream, seconds to minutes, never across thousands of chats).
_STOP_FLAGS_KEPT = 4096
_stop_flags: OrderedDict[str, threading.Event] = OrderedDict()
_stop_flags_lock = threading.Lock()
_live_workers: set[_Worker] = set()  # generations not yet closed (closed at interpreter exit)
_live_workers_lock = threading.Lock()

PLAIN_COMPLETION = "plain completion (no chat template)"


# ---- settings --------------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    """How to sample a reply; the CLI's flags, the REPL's /params and the Chat tab's sliders bind to these."""

    max_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    repetition_context_size: int = 20
    seed: int | None = None

    def problems(self) -> list[str]:
        """Every out-of-range value, one line each (empty when all are fine)."""
        out = []
        if self.max_tokens < 1:
            out.append(f"max_tokens: must be at least 1 (got {self.max_tokens})")
        if self.temperature < 0:
            out.append(f"temperature: must be >= 0, 0 = greedy (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            out.append(f"top_p: must be in (0, 1], 1 = off (got {self.top_p})")
        if self.top_k < 0:
            out.append(f"top_k: must be >= 0, 0 = off (got {self.top_k})")
        if not 0 <= self.min_p < 1:
            out.append(f"min_p: must be in [0, 1), 0 = off (got {self.min_p})")
        if self.repetition_penalty <= 0:
            out.append(f"repetition_penalty: must be > 0, 1 = off (got {self.repetition_penalty})")
        if self.repetition_context_size < 1:
            out.append(f"repetition_context_size: must be at least 1 (got {self.repetition_context_size})")
        return out

    def check(self) -> GenerationSettings:
        """Return self, or raise a ForgeError listing every problem."""
        problems = self.problems()
        if problems:
            raise ForgeError("; ".join(problems), "generation settings", "change the values named above")
        return self


SETTING_HELP = {
    "max_tokens": "most tokens in one reply",
    "temperature": "randomness of sampling; 0 = greedy (always the most likely token)",
    "top_p": "sample only from the smallest set of tokens whose probability adds up to this; 1 = off",
    "top_k": "sample only from the k most likely tokens; 0 = off",
    "min_p": "drop tokens less likely than this fraction of the most likely one; 0 = off",
    "repetition_penalty": "divide the score of recently used tokens by this; 1 = off",
    "repetition_context_size": "how many recent tokens the repetition penalty looks at",
    "seed": "same seed, same reply (with temperature > 0); none = a different one each time",
}
# Short names accepted by the REPL's /params (mlx-lm's CLI spells temperature `temp`).
SETTING_ALIASES = {"temp": "temperature", "rep_penalty": "repetition_penalty", "rep_context": "repetition_context_size"}


def parse_settings(settings: GenerationSettings, pairs: Sequence[str]) -> GenerationSettings:
    """`settings` with `key=value` pairs applied (`seed=none` clears the seed); every problem at once."""
    fields = {f.name: f for f in dataclasses.fields(GenerationSettings)}
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = SETTING_ALIASES.get(key.strip(), key.strip())
        if not sep or key not in fields:
            problems.append(f"{pair!r}: expected key=value with key one of {', '.join(fields)}")
            continue
        try:
            changes[key] = _coerce(key, raw.strip())
        except ValueError:
            problems.append(f"{key}: {raw.strip()!r} is not a valid value")
    if problems:
        raise ForgeError("; ".join(problems), "/params", "e.g. /params temp=0 max_tokens=64 seed=1")
    return dataclasses.replace(settings, **changes).check()


_INT_SETTINGS = ("max_tokens", "top_k", "repetition_context_size", "seed")


def _coerce(key: str, raw: str) -> int | float | None:
    if key == "seed" and raw.lower() in ("", "none", "null"):
        return None
    return int(raw) if key in _INT_SETTINGS else float(raw)


def settings_from_dict(data: Mapping[str, Any]) -> tuple[GenerationSettings, list[str]]:
    """Settings read from a saved file: the values, and every problem (unknown keys, wrong types, range)."""
    fields = [f.name for f in dataclasses.fields(GenerationSettings)]
    problems = [f"settings.{key}: unknown setting" for key in data if key not in fields]
    values: dict[str, Any] = {}
    for key in (k for k in fields if k in data):
        value = data[key]
        if key == "seed" and value is None:
            values[key] = None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"settings.{key}: must be a number (got {value!r})")
        elif key in _INT_SETTINGS and not float(value).is_integer():
            problems.append(f"settings.{key}: must be a whole number (got {value!r})")
        else:
            values[key] = int(value) if key in _INT_SETTINGS else float(value)
    settings = GenerationSettings(**values)
    return settings, problems + [f"settings.{p}" for p in settings.problems()]


def settings_from_form(values: Mapping[str, Any]) -> GenerationSettings:
    """The Chat tab's widget values (sliders deliver floats; an empty seed is None) → checked settings."""
    settings, problems = settings_from_dict({k: v for k, v in values.items() if not (k == "seed" and v == "")})
    if problems:
        raise ForgeError(
            "; ".join(p.removeprefix("settings.") for p in problems), "settings", "change the values named"
        )
    return settings


# ---- loading ---------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """The exact text sent to the model, its token ids and how it was formatted."""

    text: str
    tokens: list[int]
    format: str  # which template, or PLAIN_COMPLETION


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    model_path: Path
    adapter_path: Path | None
    chat_template: str | None = None  # from the run folder when training used a default template
    context_length: int | None = None  # max_position_embeddings from config.json (None: unknown)
    name: str = ""  # how the user named the model, for messages

    @property
    def label(self) -> str:
        """`tiny` or `tiny + <run>/checkpoints/<step>`, for status lines."""
        name = self.name or self.model_path.name
        if self.adapter_path is None:
            return name
        return f"{name} + {self.adapter_path.parent.parent.name}/{self.adapter_path.name}"

    def template(self, override: str | None = None) -> tuple[str | None, str]:
        """The chat template a prompt is formatted with and where it comes from (None: plain completion)."""
        if override and override.strip():
            return override, "chat template: yours"
        if self.chat_template:
            return self.chat_template, "chat template: the run's (stored at training)"
        own = getattr(self.tokenizer, "chat_template", None)
        if isinstance(own, dict):  # several named templates: the default one formats chats
            own = own.get("default") or next(iter(own.values()), None)
        if isinstance(own, str) and own.strip():
            return own, "chat template: the tokenizer's"
        return None, PLAIN_COMPLETION

    def prompt_for(
        self, messages: Sequence[Mapping[str, str]], system: str = "", template: str | None = None
    ) -> Prompt:
        """Messages (and a system prompt) → the exact prompt text and token ids.

        With a chat template the messages are rendered through it with the generation prompt added.
        Without one the model continues text: the prompt is the system prompt (then a blank line) followed
        by every message's text in order, so a reply continues the user's words.
        """
        turns = [{"role": m["role"], "content": m["content"]} for m in messages]
        if system and system.strip():
            turns = [{"role": "system", "content": system.strip()}, *[t for t in turns if t["role"] != "system"]]
        chosen, source = self.template(template)
        if chosen is None:
            head = [t["content"] for t in turns if t["role"] == "system"]
            body = "".join(t["content"] for t in turns if t["role"] != "system")
            text = "\n\n".join([*head, body]) if head else body
        else:
            text = self._render(turns, chosen)
        return Prompt(text, self.encode(text), source)

    def _render(self, turns: list[dict[str, str]], template: str) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                turns, chat_template=template, tokenize=False, add_generation_prompt=True
            )
        except Exception as e:  # jinja2 raises TemplateError, a template may raise anything
            raise ForgeError(
                f"the chat template does not render these messages: {type(e).__name__}: {e}",
                "chat template",
                "fix the template you typed (or clear it to use the model's), or drop the system prompt",
            ) from e

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Messages → prompt text through the template (or plain text without one)."""
        return self.prompt_for(messages).text

    def encode(self, text: str) -> list[int]:
        """Token ids exactly as `stream_generate` would encode `text` (BOS added unless already there)."""
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = bos is None or not text.startswith(bos)
        return list(self.tokenizer.encode(text, add_special_tokens=add_special))


def load_for_chat(model: str, adapter: Path | str | None = None, checkpoint: str = "best") -> LoadedModel:
    """Load (or reuse) `model` with an optional adapter given as a run folder or checkpoint folder.

    Base and base + adapter are different cache entries, each a model of its own.
    """
    model_path = resolve_chat_model(model)
    adapter_dir = runs.adapter_dir(Path(adapter), checkpoint) if adapter else None
    key = (str(model_path), str(adapter_dir) if adapter_dir else None)
    with _load_lock:
        if key in _cache:
            _cache.move_to_end(key)
        else:
            loaded = _load(model_path, adapter_dir)
            loaded.name = model
            _cache[key] = loaded
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        _keys_by_request[(model, str(adapter), checkpoint)] = key
        return _cache[key]


def is_loaded(model: str, adapter: Path | str | None = None, checkpoint: str = "best") -> bool:
    """Whether `load_for_chat` with these arguments was called before and its model is still in the cache:
    answered without resolving anything (no file looked at, no download started). A checkpoint written
    since (a new best) is picked up by the next `load_for_chat`, not here."""
    key = _keys_by_request.get((model, str(adapter), checkpoint))
    return key is not None and key in _cache


def loaded_models() -> list[str]:
    """Labels of the models in the cache, oldest first."""
    return [m.label for m in _cache.values()]


def unload_all() -> None:
    """Drop every cached model and give MLX's freed buffers back to the system."""
    import mlx.core as mx

    with _load_lock:
        _cache.clear()
    gc.collect()
    mx.clear_cache()


def memory_info() -> str:
    """MLX memory in use and its peak, and which models are loaded, as one line."""
    import mlx.core as mx

    loaded = ", ".join(loaded_models()) or "none"
    return f"MLX memory: {_size(mx.get_active_memory())} in use, peak {_size(mx.get_peak_memory())} · loaded: {loaded}"


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def _load(model_path: Path, adapter_dir: Path | None) -> LoadedModel:
    import mlx.core as mx
    from mlx_lm.utils import load

    if adapter_dir is not None:
        _check_adapter_base(model_path, adapter_dir)
    try:
        model, tokenizer, config = load(
            str(model_path), adapter_path=str(adapter_dir) if adapter_dir else None, return_config=True
        )
    except ValueError as e:
        refusal = custom_code_refusal(e, model_path, trusted_here=False)
        if refusal:
            raise refusal from e
        raise ForgeError(
            f"the adapter does not fit this base model: {e}",
            str(adapter_dir),
            "pick the base model the run was trained on (see its config.yaml)",
        ) from e
    except FileNotFoundError as e:  # e.g. a Hub repo that ships only GGUF or PyTorch .bin weights
        raise ForgeError(
            f"mlx-lm cannot load this folder: {e}",
            str(model_path),
            "pick a model with config.json and safetensors weights (an MLX or Hugging Face model)",
        ) from e
    # Materialise every weight here (the adapter's are still lazy): MLX 0.32 cannot evaluate an array on a
    # thread other than the one whose stream made it, and generation runs on a thread of its own.
    mx.eval(model.parameters())
    template = runs.run_chat_template(adapter_dir) if adapter_dir else None
    context = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return LoadedModel(
        model, tokenizer, model_path, adapter_dir, template, context if isinstance(context, int) else None
    )


def _check_adapter_base(model_path: Path, adapter_dir: Path) -> None:
    """Refuse an adapter trained on another base (a same-shaped copy of that base is accepted)."""
    name = runs.adapter_base_mismatch(model_path, adapter_dir)
    if name is not None:
        raise ForgeError(
            f"this adapter was trained on {name}, not on {model_path.name}",
            str(adapter_dir),
            f"choose {name} as the base model",
        )


# ---- generation ------------------------------------------------------------------------------------


def stop_flag(key: str) -> threading.Event:
    """The stop flag of one chat (a browser session, a REPL): set it and that chat's stream ends."""
    with _stop_flags_lock:
        flag = _stop_flags.get(key)
        if flag is None:
            flag = _stop_flags[key] = threading.Event()
            while len(_stop_flags) > _STOP_FLAGS_KEPT:
                _stop_flags.popitem(last=False)
        else:
            _stop_flags.move_to_end(key)
        return flag


def check_prompt(loaded: LoadedModel, tokens: Sequence[int]) -> None:
    """Refuse an empty prompt, or one that fills the model's context before a single token is generated."""
    if not tokens:
        raise ForgeError("the prompt is empty", "prompt", "type a message first")
    if loaded.context_length and len(tokens) >= loaded.context_length:
        raise ForgeError(
            f"the prompt is {len(tokens)} tokens; {loaded.label} reads at most {loaded.context_length}",
            "prompt",
            "shorten the message, or clear the chat (earlier turns are part of the prompt)",
        )


def stream(
    loaded: LoadedModel,
    prompt: str | Prompt,
    settings: GenerationSettings,
    stop: threading.Event | None = None,
) -> Iterator[Any]:
    """Yield mlx-lm `GenerationResponse` records (`.text` is the new piece; speed and finish reason ride along).

    `stop` is checked after every token: once it is set, no further token is computed. The number of new
    tokens is capped so the prompt and the reply fit the model's context. Holds the generation lock while
    iterating: a caller that stops early must `close()` the generator (Gradio does so on cancel) or the
    lock is held until it is garbage-collected.

    The tokens are computed on the process's generation thread, one when asked for (`mlx_threads`
    says why there, and only there).
    """
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    settings.check()
    tokens = prompt.tokens if isinstance(prompt, Prompt) else loaded.encode(prompt)
    check_prompt(loaded, tokens)
    max_tokens = settings.max_tokens
    if loaded.context_length:
        max_tokens = min(max_tokens, loaded.context_length - len(tokens))
    sampler = make_sampler(settings.temperature, top_p=settings.top_p, min_p=settings.min_p, top_k=settings.top_k)
    processors = make_logits_processors(
        repetition_penalty=settings.repetition_penalty if settings.repetition_penalty != 1.0 else None,
        repetition_context_size=settings.repetition_context_size,
    )
    kwargs = dict(max_tokens=max_tokens, sampler=sampler, logits_processors=processors)
    with _generate_lock:
        worker = _Worker(loaded, tokens, settings.seed, kwargs)
        try:
            while (record := worker.next()) is not None:
                yield record
                if stop is not None and stop.is_set():
                    break
        finally:
            worker.close()


class _Worker:
    """One generation, computed on the generation thread one record per `next()` (a rendezvous, so no
    token is computed before it is asked for)."""

    _NEXT, _CLOSE, _DONE = object(), object(), object()

    def __init__(self, loaded: LoadedModel, tokens: list[int], seed: int | None, kwargs: dict[str, Any]):
        self._asks: queue.Queue = queue.Queue()
        self._answers: queue.Queue = queue.Queue()
        self._finished = threading.Event()
        self._job = (loaded, tokens, seed, kwargs)
        with _live_workers_lock:
            _live_workers.add(self)
        mlx_threads.GENERATION.submit(self.run).add_done_callback(self._ended)

    def next(self) -> Any | None:
        """The next record, or None when generation has ended; an error in the worker is raised here."""
        self._asks.put(self._NEXT)
        answer = self._answers.get()
        if answer is self._DONE:
            return None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        self._asks.put(self._CLOSE)
        self._finished.wait()

    def _ended(self, job: Any) -> None:
        """`run` raised before answering (mlx-lm failed to import): the caller gets the error, not a hang."""
        error = job.exception()
        if error is not None and not self._finished.is_set():
            self._answers.put(error)
            with _live_workers_lock:
                _live_workers.discard(self)
            self._finished.set()

    def run(self) -> None:
        """Answer this generation's asks until it is closed (on the generation thread)."""
        import mlx.core as mx
        from mlx_lm.generate import stream_generate

        loaded, tokens, seed, kwargs = self._job
        records = None
        try:
            while self._asks.get() is self._NEXT:
                if records is None:
                    if seed is not None:
                        mx.random.seed(seed)
                    records = stream_generate(loaded.model, loaded.tokenizer, tokens, **kwargs)
                try:
                    self._answers.put(next(records))
                except StopIteration:
                    self._answers.put(self._DONE)
                except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
                    self._answers.put(e)
        finally:
            if records is not None:
                records.close()  # on this thread: mlx-lm's stream context was opened here
            self._job = None
            with _live_workers_lock:
                _live_workers.discard(self)
            self._finished.set()


@atexit.register
def _close_live_workers(timeout_s: float = 10.0) -> None:
    """At exit (the app stopped mid-reply), end the generation in progress and the generation thread
    before MLX tears down: a thread left waiting for its next request would make the process abort
    ("terminate called")."""
    with _live_workers_lock:
        workers = list(_live_workers)
    for worker in workers:
        worker._asks.put(_Worker._CLOSE)
    mlx_threads.GENERATION.shutdown(timeout_s)


def reply_stats(last: Any, stopped: bool = False, context_length: int | None = None) -> str:
    """One line from the final `GenerationResponse`: prompt and reply tokens, speed, first-token time, memory."""
    if last is None:
        return "The model returned nothing (it ended the answer at once)."
    if stopped:
        reason = "stopped"
    elif last.finish_reason == "stop":
        reason = "end of answer"
    elif context_length and last.prompt_tokens + last.generation_tokens >= context_length:
        reason = "context full"
    elif last.finish_reason == "length":
        reason = "max tokens reached"
    else:
        reason = str(last.finish_reason)
    first = last.prompt_tokens / last.prompt_tps if last.prompt_tps else 0.0  # prompt processing = first token
    return (
        f"prompt {last.prompt_tokens} tokens · {last.generation_tokens} tokens · {last.generation_tps:.1f} tokens/s · "
        f"first token {first:.2f} s · peak {_size(last.peak_memory * 1e9)} · {reason}"
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

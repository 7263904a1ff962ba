"""One chat turn, in one column or side by side: the logic behind the Chat tab (no Gradio here).

Side by side, the same user message goes to the base model alone (no adapter at all: its own cache
entry, a model mlx-lm built without LoRA layers) and to base + the run's adapter. The columns are
generated one after the other (base first), each seeded alike, so each answers exactly as it would
alone; one stop flag ends the turn within a token.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import inference
from .errors import ForgeError
from .inference import GenerationSettings, LoadedModel, Prompt


@dataclass
class ColumnState:
    """One column of a turn: the model answering, its messages so far (reply included) and the prompt sent."""

    label: str
    messages: list[dict[str, str]]
    prompt: Prompt | None = None
    stats: str = ""
    tokens: list[int] = field(default_factory=list)  # the reply's token ids (an end-of-answer token included)


@dataclass
class TurnUpdate:
    """What a turn looks like now; `piece` is the newest text of column `active` (-1: none generating)."""

    columns: list[ColumnState]
    status: str
    active: int = -1
    piece: str = ""
    done: bool = False
    stopped: bool = False

    def prompt_view(self) -> str:
        """The exact prompt text each column sent, with its format and length."""
        parts = []
        for column in self.columns:
            if column.prompt is not None:
                head = f"── {column.label} · {column.prompt.format} · {len(column.prompt.tokens)} tokens ──"
                parts.append(f"{head}\n{column.prompt.text}")
        return "\n\n".join(parts)


def load_models(
    model: str, adapter: Path | None, checkpoint: str = "best", side_by_side: bool = False
) -> list[LoadedModel]:
    """The models a turn needs: [base + adapter] (or the base alone), or side by side [base alone, base + adapter]."""
    if side_by_side:
        if adapter is None:
            raise ForgeError(
                "side by side compares the base model with a fine-tuned checkpoint, and no adapter is chosen",
                "adapter",
                "choose a run (and checkpoint) as the adapter, or turn side by side off",
            )
        return [inference.load_for_chat(model), inference.load_for_chat(model, adapter, checkpoint)]
    return [inference.load_for_chat(model, adapter, checkpoint)]


def run_turn(
    text: str,
    histories: Sequence[Sequence[dict[str, str]]],
    models: Sequence[LoadedModel],
    settings: GenerationSettings,
    system: str = "",
    template: str | None = None,
    stop: threading.Event | None = None,
) -> Iterator[TurnUpdate]:
    """Send `text` to each model (with that column's history) in turn, yielding after every token.

    Every yield is the same `TurnUpdate`, updated in place (a reply is not copied per token).

    Raises:
        ForgeError: an empty message, bad settings, a prompt longer than a model's context, a template
            that does not render. Checked for every column before anything is generated.
    """
    text = (text or "").strip()
    if not text:
        raise ForgeError("the message is empty", "message", "type something, then press Send")
    settings.check()
    if len(histories) != len(models):
        raise ValueError("one history per model")
    # A run stores the template it trained with when the tokenizer had none: side by side, the base model
    # gets that format too, so both columns are sent the same prompt.
    stored = next((m.chat_template for m in models if m.chat_template), None)
    columns = []
    for history, loaded in zip(histories, models, strict=True):
        messages = [*history, {"role": "user", "content": text}]
        formatter = dataclasses.replace(loaded, chat_template=loaded.chat_template or stored)  # the cache's stays
        prompt = formatter.prompt_for(messages, system, template)
        inference.check_prompt(loaded, prompt.tokens)
        columns.append(ColumnState(loaded.label, [*messages, {"role": "assistant", "content": ""}], prompt))
    update = TurnUpdate(columns, "Generating…")
    yield update
    for i, (column, loaded) in enumerate(zip(columns, models, strict=True)):
        reply, last = "", None
        records = inference.stream(loaded, column.prompt, settings, stop)
        try:
            for last in records:
                reply += last.text
                column.tokens.append(last.token)
                column.messages[-1] = {"role": "assistant", "content": reply}
                update.active, update.piece = i, last.text
                yield update
        finally:
            records.close()  # frees the generation lock even when the caller stops iterating here
        update.stopped = stop is not None and stop.is_set()
        column.stats = inference.reply_stats(last, update.stopped, loaded.context_length)
        if update.stopped:
            break
    update.active, update.piece, update.done = -1, "", True
    update.status = _status(columns)
    yield update


def models_loaded(model: str, adapter: Path | None, checkpoint: str = "best", side_by_side: bool = False) -> bool:
    """Whether `load_models` with these arguments would find every model loaded (no slow load ahead)."""
    wanted = [(model, None, "best")] if side_by_side else []
    return all(inference.is_loaded(*args) for args in [*wanted, (model, adapter, checkpoint)])


def paced(updates: Iterator[TurnUpdate], every_s: float) -> Iterator[TurnUpdate]:
    """Pass on token updates at most once every `every_s` seconds; the first and last update, and the first
    token of each column, always. Tokens skipped here are in the next update that passes (replies are
    cumulative), and generation is not slowed: the source is still iterated token by token."""
    shown_at, shown_column = -math.inf, None
    for update in updates:
        now = time.monotonic()
        if update.active < 0 or update.active != shown_column or now - shown_at >= every_s:
            shown_at, shown_column = now, update.active
            yield update


def _status(columns: list[ColumnState]) -> str:
    if len(columns) == 1:
        return columns[0].stats
    return "\n\n".join(f"**{c.label}:** {c.stats or 'not generated (stopped)'}" for c in columns)

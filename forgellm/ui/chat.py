"""Chat tab: talk to a base model, optionally with a run's adapter, with the reply streaming in.

The reply is a generator over `inference.stream` (each record's `.text` is appended); speed and finish
reason come from the last record. Stop cancels the generator, which closes the stream and frees the
generation lock. The settings column sits beside one chat column so that a second (base vs fine-tuned)
column can be added later.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import choices, inference
from .common import choices_update, guarded

_DEFAULTS = inference.GenerationSettings()


@dataclass
class ChatTab:
    model: gr.Dropdown
    adapter: gr.Dropdown
    checkpoint: gr.Dropdown
    temperature: gr.Slider
    top_p: gr.Slider
    max_tokens: gr.Slider
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button
    clear: gr.Button
    info: gr.Markdown


def build(demo: gr.Blocks) -> ChatTab:
    """Lay out the Chat tab and wire sending, streaming, stopping and clearing."""
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            model = gr.Dropdown(
                choices.model_choices(choices.DEFAULT_CHAT_MODEL),
                value=choices.DEFAULT_CHAT_MODEL,
                label="base model",
                info="Built-in, a folder under models/, or a Hub id.",
                allow_custom_value=True,
            )
            adapter = gr.Dropdown(
                choices.adapter_choices(),
                value=choices.NO_ADAPTER,
                label="adapter",
                info="A run with checkpoints; choosing one selects its base model.",
            )
            checkpoint = gr.Dropdown([], value=None, label="checkpoint", info="best, latest or a step.")
            temperature = gr.Slider(0.0, 2.0, value=_DEFAULTS.temperature, step=0.05, label="temperature")
            top_p = gr.Slider(0.01, 1.0, value=_DEFAULTS.top_p, step=0.01, label="top-p")
            max_tokens = gr.Slider(1, 2048, value=_DEFAULTS.max_tokens, step=1, label="max tokens")
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="chat", height=460)
            with gr.Row():
                message = gr.Textbox(placeholder="Ask something and press Enter", show_label=False, scale=5)
                send = gr.Button("Send", variant="primary", scale=1)
            with gr.Row():
                stop = gr.Button("Stop", variant="stop")
                clear = gr.Button("Clear")
            info = gr.Markdown()
    tab = ChatTab(model, adapter, checkpoint, temperature, top_p, max_tokens, chatbot, message, send, stop, clear, info)

    inputs = [message, chatbot, model, adapter, checkpoint, temperature, top_p, max_tokens]
    outputs = [chatbot, message, info]
    # One queue for both triggers: generation is serialised anyway (inference holds a lock).
    submitted = message.submit(_respond, inputs, outputs, concurrency_id="chat")
    clicked = send.click(_respond, inputs, outputs, concurrency_id="chat")
    stop.click(lambda: "Stopped.", None, info, cancels=[submitted, clicked])
    clear.click(lambda: ([], "", ""), None, outputs, cancels=[submitted, clicked])
    adapter.change(_adapter_changed, [adapter, model], [checkpoint, model])
    demo.load(_refresh_lists, [model, adapter], [model, adapter])
    return tab


def _refresh_lists(model: str, adapter: str) -> list[Any]:
    """Re-read models/ and runs/ when a page opens (new fused models and runs appear)."""
    return [
        gr.update(choices=choices.model_choices(model)),
        choices_update(choices.adapter_choices(), choices.NO_ADAPTER, keep=adapter),
    ]


@guarded(lambda _error, *_inputs: [gr.update(choices=[], value=None), gr.skip()])
def _adapter_changed(adapter: str, model: str) -> list[Any]:
    """Offer the adapter's checkpoints and switch the base model to the one the run trained on."""
    if not adapter or adapter == choices.NO_ADAPTER:
        return [gr.update(choices=[], value=None), gr.skip()]
    steps = choices.checkpoint_choices(adapter)
    base = choices.run_base_model(adapter) or model
    return [
        gr.update(choices=steps, value=steps[0] if steps else None),
        gr.update(choices=choices.model_choices(base), value=base),
    ]


def _restore(error: str, message: str, history: list[dict[str, Any]], *_settings: Any) -> list[Any]:
    """On a failure, the chat as it was before this turn and the message back in the box to resend."""
    return [history, message, error]


@guarded(_restore)
def _respond(
    message: str,
    history: list[dict[str, Any]],
    model: str,
    adapter: str,
    checkpoint: str | None,
    temperature: float,
    top_p: float,
    max_tokens: float,
) -> Iterator[list[Any]]:
    """Stream the assistant's reply into the chat."""
    text = (message or "").strip()
    if not text:
        yield [gr.skip(), gr.skip(), gr.skip()]
        return
    turn = [
        *inference.chat_messages(history or []),
        {"role": "user", "content": text},
        {"role": "assistant", "content": ""},
    ]
    yield [turn, "", "Loading the model (the first time can take a while)…"]
    adapter_dir = choices.resolve_run(adapter) if adapter and adapter != choices.NO_ADAPTER else None
    loaded = inference.load_for_chat(choices.check_model_choice(model), adapter_dir, checkpoint or "best")
    prompt = loaded.chat_prompt(turn[:-1])
    settings = inference.GenerationSettings(
        max_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p)
    )
    reply, last = "", None
    # closing(): when Stop cancels this generator, the stream closes too and frees the generation lock.
    with contextlib.closing(inference.stream(loaded, prompt, settings)) as pieces:
        for last in pieces:
            reply += last.text
            turn[-1] = {"role": "assistant", "content": reply}
            yield [turn, "", "Generating…"]
    yield [turn, "", _speed(last)]


def _speed(last: Any) -> str:
    """Tokens, tokens/s and why generation ended, from the final GenerationResponse."""
    if last is None:
        return "The model returned nothing."
    reason = {"stop": "end of answer", "length": "max tokens reached"}.get(last.finish_reason, str(last.finish_reason))
    return f"{last.generation_tokens} tokens · {last.generation_tps:.1f} tokens/s · {reason}"

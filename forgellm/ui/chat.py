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

from .. import appstate, inference
from .common import choices_update, show_error

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
            model = gr.Dropdown(appstate.model_choices(appstate.DEFAULT_CHAT_MODEL), value=appstate.DEFAULT_CHAT_MODEL,
                                label="base model", info="Built-in, a folder under models/, or a Hub id.",
                                allow_custom_value=True)  # fmt: skip
            adapter = gr.Dropdown(appstate.adapter_choices(), value=appstate.NO_ADAPTER, label="adapter",
                                  info="A run with checkpoints; choosing one selects its base model.")  # fmt: skip
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
        gr.update(choices=appstate.model_choices(model)),
        choices_update(appstate.adapter_choices(), appstate.NO_ADAPTER, keep=adapter),
    ]


def _adapter_changed(adapter: str, model: str) -> list[Any]:
    """Offer the adapter's checkpoints and switch the base model to the one the run trained on."""
    if not adapter or adapter == appstate.NO_ADAPTER:
        return [gr.update(choices=[], value=None), gr.skip()]
    try:
        steps = appstate.checkpoint_choices(adapter)
        base = appstate.run_base_model(adapter) or model
    except Exception as e:  # noqa: BLE001 - shown as a message
        show_error(e)
        return [gr.update(choices=[], value=None), gr.skip()]
    return [gr.update(choices=steps, value=steps[0] if steps else None), gr.update(choices=appstate.model_choices(base), value=base)]


def _respond(
    message: str, history: list[dict[str, Any]], model: str, adapter: str, checkpoint: str | None,
    temperature: float, top_p: float, max_tokens: float,
) -> Iterator[list[Any]]:  # fmt: skip
    """Stream the assistant's reply into the chat; errors leave the chat as it was and say why."""
    text = (message or "").strip()
    if not text:
        yield [gr.skip(), gr.skip(), gr.skip()]
        return
    before = appstate.chat_messages(history or [])
    turn = [*before, {"role": "user", "content": text}, {"role": "assistant", "content": ""}]
    yield [turn, "", "Loading the model (the first time can take a while)…"]
    try:
        adapter_dir = appstate.resolve_run(adapter) if adapter and adapter != appstate.NO_ADAPTER else None
        loaded = inference.load_for_chat(appstate.check_model_choice(model), adapter_dir, checkpoint or "best")
        prompt = loaded.chat_prompt(turn[:-1])
    except Exception as e:  # noqa: BLE001 - e.g. an adapter that does not fit the base: a message, not a crash
        yield [before, message, show_error(e)]  # give the message back so it can be resent
        return
    settings = inference.GenerationSettings(max_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p))
    reply, last = "", None
    try:
        # closing(): when Stop cancels this generator, the stream closes too and frees the generation lock.
        with contextlib.closing(inference.stream(loaded, prompt, settings)) as pieces:
            for last in pieces:
                reply += last.text
                turn[-1] = {"role": "assistant", "content": reply}
                yield [turn, "", "Generating…"]
    except Exception as e:  # noqa: BLE001 - keep what was generated, say what went wrong
        yield [turn, "", show_error(e)]
        return
    yield [turn, "", _speed(last)]


def _speed(last: Any) -> str:
    """Tokens, tokens/s and why generation ended, from the final GenerationResponse."""
    if last is None:
        return "The model returned nothing."
    reason = {"stop": "end of answer", "length": "max tokens reached"}.get(last.finish_reason, str(last.finish_reason))
    return f"{last.generation_tokens} tokens · {last.generation_tps:.1f} tokens/s · {reason}"

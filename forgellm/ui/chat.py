"""Chat tab: talk to a model, alone or side by side with a fine-tuned checkpoint, the reply streaming in.

Widgets and wiring only: the model list is `choices.chat_model_choices`, loading and the turn itself are
`chat_turn`, prompt formatting and sampling `inference`, files `conversation`. Stop sets this browser
session's stop flag, which the stream checks after every token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr

from .. import chat_turn, choices, conversation, evaluation, inference, mlx_threads, paths
from ..atomic import write_text
from ..errors import ForgeError
from ..model_sources import chat_start
from ..models.registry import hub_downloads_allowed
from .common import choices_refresh, choices_update, guarded
from .gain_section import GainSection, build_gain_section

_DEFAULTS = inference.GenerationSettings()
# The reply is redrawn at most 10 times a second: each update costs Gradio about 9 ms of CPU (measured with
# SmolLM2 on 2 cores), which a per-token update took from generation (bench/chat_bench.py, app part).
UPDATE_EVERY_S = 0.1
SETTING_FIELDS = [f.name for f in dataclasses.fields(inference.GenerationSettings)]


@dataclass
class ChatTab:
    model: gr.Dropdown
    adapter: gr.Dropdown
    checkpoint: gr.Dropdown
    side_by_side: gr.Checkbox
    load: gr.Button
    unload: gr.Button
    model_info: gr.Markdown
    settings: dict[str, gr.components.Component]  # one widget per GenerationSettings field
    system: gr.Textbox
    template: gr.Textbox
    base_chatbot: gr.Chatbot
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button
    clear: gr.Button
    info: gr.Markdown
    prompt: gr.Code
    save: gr.Button
    export: gr.Button
    open: gr.UploadButton
    file: gr.File
    session: gr.State
    eval_data: gr.Dropdown | None = None
    evaluate: gr.Button | None = None
    eval_result: gr.Code | None = None
    gain: GainSection | None = None

    def setting_widgets(self) -> list[gr.components.Component]:
        """The settings widgets in GenerationSettings field order (the order handlers receive them in)."""
        return [self.settings[name] for name in SETTING_FIELDS]


def _setting_widgets() -> dict[str, gr.components.Component]:
    d, h = _DEFAULTS, inference.SETTING_HELP
    with gr.Row():
        temperature = gr.Slider(0.0, 2.0, value=d.temperature, step=0.05, label="temperature", info=h["temperature"])
        top_p = gr.Slider(0.01, 1.0, value=d.top_p, step=0.01, label="top-p", info=h["top_p"])
        top_k = gr.Slider(0, 200, value=d.top_k, step=1, label="top-k", info=h["top_k"])
        min_p = gr.Slider(0.0, 0.99, value=d.min_p, step=0.01, label="min-p", info=h["min_p"])
    with gr.Row():
        penalty = gr.Slider(
            0.5, 2.0, value=d.repetition_penalty, step=0.01, label="repetition penalty", info=h["repetition_penalty"]
        )
        context = gr.Slider(
            1, 512, value=d.repetition_context_size, step=1, label="penalty context", info=h["repetition_context_size"]
        )
        max_tokens = gr.Slider(1, 2048, value=d.max_tokens, step=1, label="max tokens", info=h["max_tokens"])
        seed = gr.Number(value=d.seed, precision=0, label="seed", info=h["seed"])
    widgets = dict(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=penalty,
        repetition_context_size=context,
        max_tokens=max_tokens,
        seed=seed,
    )
    return widgets


def _model_info() -> str:
    """The model picker's help: whether a typed Hub id may be downloaded (FORGELLM_HUB_DOWNLOADS)."""
    if hub_downloads_allowed():
        return "Built-in, models/ (fused too), the Hugging Face cache, or type a Hub id (org/name) to download."
    return "Built-in, models/ (fused too) or the Hugging Face cache; Hub downloads are off on this server."


def build(demo: gr.Blocks) -> ChatTab:
    """Lay out the Chat tab: model row, settings, one or two chat columns, save/load row."""
    start = chat_start()
    with gr.Row():
        model = gr.Dropdown(
            choices.chat_model_choices(start.model),
            value=start.model,
            label="model",
            info=_model_info(),
            allow_custom_value=True,
            scale=3,
        )
        adapter = gr.Dropdown(
            choices.adapter_choices(),
            value=choices.NO_ADAPTER,
            label="adapter",
            info="A run with checkpoints; picking one selects its base model.",
            scale=2,
        )
        checkpoint = gr.Dropdown([], value=None, label="checkpoint", info="best, latest or a step.", scale=1)
        with gr.Column(scale=1, min_width=160):
            side_by_side = gr.Checkbox(False, label="side by side", info="base alone vs base + adapter")
            with gr.Row():
                load = gr.Button("Load", size="sm")
                unload = gr.Button("Unload", size="sm")
    model_info = gr.Markdown(start.note)
    with gr.Accordion("Settings", open=False):
        settings = _setting_widgets()
        system = gr.Textbox(label="system prompt", lines=2, placeholder="optional, e.g. You are a helpful beekeeper.")
        template = gr.Textbox(
            label="chat template (overrides the model's)",
            lines=3,
            placeholder="empty: the run's stored template, else the tokenizer's, else plain completion",
        )
    with gr.Row():
        with gr.Column(visible=False) as base_column:
            base_chatbot = gr.Chatbot(label="base model alone (no adapter)", height=440)
        with gr.Column():
            chatbot = gr.Chatbot(label="chat", height=440)
    with gr.Row():
        message = gr.Textbox(placeholder="Ask something and press Enter", show_label=False, scale=5)
        send = gr.Button("Send", variant="primary", scale=1)
    with gr.Row():
        stop = gr.Button("Stop", variant="stop")
        clear = gr.Button("Clear")
    info = gr.Markdown()
    with gr.Accordion("Prompt sent (exact text)", open=False):
        prompt = gr.Code(language=None, label="prompt", interactive=False)
    with gr.Row():
        save = gr.Button("Save JSON")
        export = gr.Button("Export Markdown")
        open_file = gr.UploadButton("Open JSON…", file_types=[".json"], type="filepath")
        file = gr.File(label="conversation file", interactive=False, height=60)
    session = gr.State(lambda: uuid.uuid4().hex)  # one stop flag per browser session
    with gr.Accordion("Evaluate: perplexity", open=False):
        gr.Markdown(
            "Perplexity (mean loss, tokens, standard error) of the model above, with its adapter when one is "
            "chosen, on text under `dataset/` or on the adapter run's validation split."
        )
        with gr.Row():
            eval_data = gr.Dropdown(_eval_choices(), value=VALIDATION_SPLIT, label="data", scale=4)
            evaluate = gr.Button("Measure perplexity", scale=1)
        eval_result = gr.Code(language=None, label="result", interactive=False)
    tab = ChatTab(
        model, adapter, checkpoint, side_by_side, load, unload, model_info, settings, system, template,
        base_chatbot, chatbot, message, send, stop, clear, info, prompt, save, export, open_file, file, session,
        eval_data, evaluate, eval_result, build_gain_section(adapter),
    )  # fmt: skip
    _wire(demo, tab, base_column)
    return tab


def _wire(demo: gr.Blocks, tab: ChatTab, base_column: gr.Column) -> None:
    state = [tab.chatbot, tab.base_chatbot, tab.side_by_side, tab.model, tab.adapter, tab.checkpoint]
    state += [tab.system, tab.template, *tab.setting_widgets()]
    reply_outputs = [tab.chatbot, tab.base_chatbot, tab.message, tab.info, tab.prompt, tab.model_info]
    # The stop flag is cleared when a message is sent (outside the queue), so a Stop pressed while the reply
    # still waits in the queue counts. One queue for both triggers: generation is serialised anyway.
    inputs = [tab.message, tab.session, *state]
    submitted = tab.message.submit(_arm, tab.session, None, queue=False)
    submitted = submitted.then(_respond, inputs, reply_outputs, concurrency_id="chat")
    clicked = tab.send.click(_arm, tab.session, None, queue=False)
    clicked = clicked.then(_respond, inputs, reply_outputs, concurrency_id="chat")
    tab.stop.click(_stop, tab.session, None)
    tab.clear.click(
        _clear, tab.session, [tab.chatbot, tab.base_chatbot, tab.message, tab.info], cancels=[submitted, clicked]
    )
    tab.load.click(_load, [tab.model, tab.adapter, tab.checkpoint, tab.side_by_side], tab.model_info)
    tab.unload.click(_unload, None, tab.model_info)
    tab.side_by_side.change(_columns, tab.side_by_side, [base_column, tab.chatbot])
    tab.adapter.input(_adapter_changed, [tab.adapter, tab.model], [tab.checkpoint, tab.model])
    tab.save.click(_save, state, [tab.file, tab.info])
    tab.export.click(_export, state, [tab.file, tab.info])
    tab.open.upload(_open, [tab.open, *state], [*state, tab.info])
    tab.evaluate.click(_evaluate, [tab.model, tab.adapter, tab.checkpoint, tab.eval_data], tab.eval_result)
    demo.load(_refresh_lists, [tab.model, tab.adapter, tab.eval_data], [tab.model, tab.adapter, tab.eval_data])


# ---- handlers ----------------------------------------------------------------------------------------


def _refresh_lists(model: str, adapter: str, eval_data: str) -> list[Any]:
    """Re-read models/, the Hugging Face cache, runs/ and dataset/ when a page opens (new models, runs, files)."""
    return [
        gr.update(choices=choices.chat_model_choices(model)),
        choices_refresh(choices.adapter_choices(), adapter, choices.NO_ADAPTER),
        choices_refresh(_eval_choices(), eval_data, VALIDATION_SPLIT),
    ]


VALIDATION_SPLIT = "val"


def _eval_choices() -> list[tuple[str, str]]:
    return [("the adapter run's validation split", VALIDATION_SPLIT), *((p, p) for p in choices.dataset_choices())]


@guarded(lambda error, *_inputs: error)
def _evaluate(
    model: str,
    adapter: str | None,
    checkpoint: str | None,
    data: str | None,
    progress=gr.Progress(),  # noqa: B008 - Gradio finds its progress bar through this default
) -> str:
    """`forgellm eval` for the model and adapter picked above; data only from dataset/ or the run's split."""
    progress(0, desc="Loading the model and measuring…")
    model = choices.check_model_choice(model)
    if data != VALIDATION_SPLIT:
        choices.require_dataset_paths(data)  # nothing outside dataset/ is reachable from the app
        data = str(paths.PROJECT_ROOT / data)
    return mlx_threads.call(evaluation.evaluate, model, data, _adapter_dir(adapter), checkpoint or "best").summary()


@guarded(lambda _error, *_inputs: [gr.update(choices=[], value=None), gr.skip()])
def _adapter_changed(adapter: str, model: str) -> list[Any]:
    """Offer the adapter's checkpoints and switch the base model to the one the run trained on."""
    if not adapter or adapter == choices.NO_ADAPTER:
        return [gr.update(choices=[], value=None), gr.skip()]
    steps = choices.checkpoint_choices(adapter)
    base = choices.run_base_model(adapter) or model
    return [
        gr.update(choices=steps, value=steps[0] if steps else None),
        gr.update(choices=choices.chat_model_choices(base), value=base),
    ]


def _columns(side_by_side: bool) -> list[Any]:
    label = "base + adapter" if side_by_side else "chat"
    return [gr.update(visible=side_by_side), gr.update(label=label)]


def _adapter_dir(adapter: str | None) -> Path | None:
    return choices.resolve_run(adapter) if adapter and adapter != choices.NO_ADAPTER else None


def _models_loaded(model: str, adapter: str | None, checkpoint: str | None, side_by_side: bool) -> bool:
    try:
        model = choices.check_model_choice(model)
        return chat_turn.models_loaded(model, _adapter_dir(adapter), checkpoint or "best", bool(side_by_side))
    except ForgeError:
        return False  # the load itself reports the problem


def _models(model: str, adapter: str | None, checkpoint: str | None, side_by_side: bool) -> list[Any]:
    args = (choices.check_model_choice(model), _adapter_dir(adapter), checkpoint or "best", bool(side_by_side))
    if chat_turn.models_loaded(*args):  # nothing to compute: not queued behind a fuse or an evaluation
        return chat_turn.load_models(*args)
    return mlx_threads.call(chat_turn.load_models, *args)


@guarded(lambda error, *_inputs: error)
def _load(
    model: str,
    adapter: str,
    checkpoint: str | None,
    side_by_side: bool,
    progress=gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio finds its progress bar through this default
) -> str:
    """Load (downloading a Hub id first) what the next message will use, with MLX's memory after."""
    progress(0, desc=f"Loading {model} (a Hub id is downloaded first)…")
    loaded = _models(model, adapter, checkpoint, side_by_side)
    formats = "; ".join(f"{m.label}: {m.template()[1]}" for m in loaded)
    return f"Ready: {formats}.\n\n{inference.memory_info()}"


@guarded(lambda error, *_inputs: error)
def _unload() -> str:
    inference.unload_all()
    return f"Unloaded.\n\n{inference.memory_info()}"


def _arm(session: str | None) -> None:
    inference.stop_flag(session or "").clear()


def _stop(session: str | None) -> None:
    inference.stop_flag(session or "").set()


def _clear(session: str | None) -> list[Any]:
    inference.stop_flag(session or "").set()
    return [[], [], "", ""]


def _settings(values: tuple[Any, ...]) -> inference.GenerationSettings:
    return inference.settings_from_form(dict(zip(SETTING_FIELDS, values, strict=True)))


def _restore(error: str, message: str, _session: Any, history: Any, base_history: Any, *_rest: Any) -> list[Any]:
    """On a failure, both chats as they were before this turn and the message back in the box to resend."""
    return [history, base_history, message, error, gr.skip(), gr.skip()]


@guarded(_restore)
def _respond(
    message: str,
    session: str | None,
    history: list[dict[str, Any]] | None,
    base_history: list[dict[str, Any]] | None,
    side_by_side: bool,
    model: str,
    adapter: str,
    checkpoint: str | None,
    system: str,
    template: str,
    *setting_values: Any,
):
    """Stream the reply (side by side: the base model's, then the fine-tuned one's) into the chat."""
    if not (message or "").strip():
        raise ForgeError("the message is empty", "message", "type something, then press Send")
    settings = _settings(setting_values)
    stop = inference.stop_flag(session or "")  # cleared by _arm when the message was sent
    if not _models_loaded(model, adapter, checkpoint, side_by_side):  # else no update: the reply starts sooner
        loading = "Loading the model (a Hub id is downloaded first; **Load** shows its progress)…"
        yield [gr.skip(), gr.skip(), gr.skip(), loading, gr.skip(), gr.skip()]
    models = _models(model, adapter, checkpoint, side_by_side)
    histories = [base_history, history] if side_by_side else [history]
    histories = [inference.chat_messages(h or []) for h in histories]
    # closing(): when Clear cancels this generator, the turn and its stream close too (freeing the lock).
    with contextlib.closing(chat_turn.run_turn(message, histories, models, settings, system, template, stop)) as turn:
        for update in chat_turn.paced(turn, UPDATE_EVERY_S):
            chats = [column.messages for column in update.columns]
            if update.active < 0:  # the first update (the user's message in every column) and the last
                memory = inference.memory_info() if update.done else gr.skip()
                base_chat = chats[0] if side_by_side else gr.skip()
                yield [chats[-1], base_chat, "", update.status, update.prompt_view(), memory]
            else:  # a token: only the column it went to changes (less for Gradio to process per token)
                growing = len(chats) - 1
                tuned = chats[-1] if update.active == growing else gr.skip()
                base_chat = chats[0] if side_by_side and update.active == 0 else gr.skip()
                yield [tuned, base_chat, gr.skip(), gr.skip(), gr.skip(), gr.skip()]


# ---- files -------------------------------------------------------------------------------------------


def _conversation(
    history: Any, base_history: Any, side_by_side: bool, model: str, adapter: str, checkpoint: str | None,
    system: str, template: str, *setting_values: Any,
) -> conversation.Conversation:  # fmt: skip
    run = adapter if adapter and adapter != choices.NO_ADAPTER else None
    return conversation.Conversation(
        messages=inference.chat_messages(history or []),
        model=model,
        adapter=run,
        checkpoint=(checkpoint or "best") if run else None,
        system=system or "",
        chat_template=template or None,
        settings=_settings(setting_values),
        base_messages=inference.chat_messages(base_history or []) if side_by_side else None,
    )


def _download_path(suffix: str) -> Path:
    """A fresh file in the system's temp folder (Gradio serves files from there)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.mkdtemp(prefix="forgellm-chat-")) / f"chat-{stamp}{suffix}"


@guarded(lambda error, *_inputs: [gr.skip(), error])
def _save(*state: Any) -> list[Any]:
    chat = _conversation(*state)
    path = conversation.save(chat, _download_path(".json"))
    return [str(path), f"Saved {len(chat.messages)} messages as JSON: download it above, open it again later."]


@guarded(lambda error, *_inputs: [gr.skip(), error])
def _export(*state: Any) -> list[Any]:
    chat = _conversation(*state)
    path = _download_path(".md")
    write_text(path, conversation.to_markdown(chat))
    return [str(path), f"Exported {len(chat.messages)} messages as Markdown."]


@guarded(lambda error, *inputs: [gr.skip()] * (len(inputs) - 1) + [error])
def _open(file: str | None, *_state: Any) -> list[Any]:
    """Put a saved conversation back: both chats, the model, adapter, checkpoint, prompts and settings."""
    if not file:
        raise ForgeError("no file was uploaded", "conversation", "pick a .json file saved by this tab")
    chat = conversation.load(file)
    adapters = choices.adapter_choices()
    run = chat.adapter if chat.adapter in [value for _label, value in adapters] else None
    steps = choices.checkpoint_choices(run) if run else []
    note = (
        f" Its adapter {chat.adapter!r} is not among the runs here: chatting without it."
        if chat.adapter and not run
        else ""
    )
    settings = dataclasses.asdict(chat.settings)
    return [
        chat.messages,
        chat.base_messages or [],
        chat.base_messages is not None,
        gr.update(choices=choices.chat_model_choices(chat.model), value=chat.model) if chat.model else gr.skip(),
        choices_update(adapters, choices.NO_ADAPTER, keep=run),
        gr.update(choices=steps, value=chat.checkpoint if chat.checkpoint in steps else (steps[0] if steps else None)),
        chat.system,
        chat.chat_template or "",
        *(settings[name] for name in SETTING_FIELDS),
        f"Opened {len(chat.messages)} messages.{note}",
    ]

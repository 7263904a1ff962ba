"""The Gradio app: `build_app()` lays out one tab per module and wires the few links between them.

Each tab module only connects widgets to library functions (`forgellm.forms`, `forgellm.choices`,
`forgellm.run_summary` hold the form, list and status logic, without Gradio). Building reads a few small
files (configs, run and model lists) and loads no model.
"""

from __future__ import annotations

import os

# Gradio's analytics start non-daemon threads that can hang a firewalled machine at exit; set these
# before gradio is imported (app.py does too, for launches that do not come through here first).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from .. import choices  # noqa: E402
from . import chat, dataset, models, monitoring, publishing, training  # noqa: E402
from .common import CSS, choices_update  # noqa: E402

TITLE = "ForgeLLM"
REFRESH_SECONDS = 2.0

__all__ = ["CSS", "TITLE", "build_app"]


def build_app() -> gr.Blocks:
    """Construct the app's Blocks without launching it (call `.queue().launch(css=CSS)` to serve)."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nContinued pre-training and instruction tuning with MLX: train, watch, chat, publish.")
        # Outside gr.Tabs: a timer inside a tab that was never opened does not tick.
        timer = gr.Timer(REFRESH_SECONDS)
        with gr.Tabs():
            with gr.Tab("Training"):
                train_tab = training.build(timer, demo)
            with gr.Tab("Dataset"):
                dataset.build(demo, train_tab)
            with gr.Tab("Monitoring"):
                monitor_tab = monitoring.build(timer, demo)
            with gr.Tab("Chat"):
                chat_tab = chat.build(demo)
            with gr.Tab("Publishing"):
                publish_tab = publishing.build(demo)
            with gr.Tab("Models"):
                models.build(demo)
        # Monitoring follows the Training tab's current run (e.g. the one just started).
        train_tab.run.change(monitoring.follow_run, train_tab.run, monitor_tab.run)
        # Every run list, in every tab, follows the runs folder: a run started (here, by the CLI or in another
        # browser), ended, checkpointed or deleted shows up within a timer tick, with no page reload.
        lists = [train_tab.run, train_tab.past_run, monitor_tab.run, chat_tab.adapter, publish_tab.run]
        seen = gr.State(None)
        timer.tick(_sync_run_lists, [seen, *lists], [seen, *lists], show_progress="hidden")
    return demo


def _sync_run_lists(
    seen: tuple | None, train_run: str | None, past_run: str | None, monitor_run: str | None, adapter: str | None,
    publish_run: str | None,
) -> list:  # fmt: skip
    """Fresh choices for every run list when the runs folder changed (nothing sent otherwise); a run that
    just started running is selected in Monitoring (and as the Training tab's current run)."""
    now = choices.runs_signature()
    if now == seen:
        return [gr.skip()] * 6
    follow = choices.newly_running(seen, now) if seen is not None else None
    listed = choices.run_choices()
    return [
        now,
        choices_update(listed, choices.running_run(), keep=follow or train_run),
        choices_update(listed, None, keep=past_run),
        choices_update(listed, listed[0][1] if listed else None, keep=follow or monitor_run),
        choices_update(choices.adapter_choices(), choices.NO_ADAPTER, keep=adapter),
        choices_update(choices.run_choices(with_checkpoints=True), None, keep=publish_run),
    ]

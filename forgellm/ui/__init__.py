"""The Gradio app: `build_app()` lays out one tab per module and wires the few links between them.

Each tab module only connects widgets to library functions (`forgellm.forms`, `forgellm.choices`,
`forgellm.run_summary` hold the form, list and status logic, without Gradio). Building reads a few small
files (configs, run and model lists) and loads no model.
"""

from __future__ import annotations

import functools
import os

# Gradio's analytics start non-daemon threads that can hang a firewalled machine at exit; set these
# before gradio is imported (app.py does too, for launches that do not come through here first).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Gradio's queue keeps a record of each event for its own monitoring page, 10,000 by default: an open tab
# makes ~90 events a minute, so that table grew for almost two hours. 1,000 are plenty for that page.
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")

import gradio as gr  # noqa: E402

from .. import choices  # noqa: E402
from ..publish import workflow  # noqa: E402
from . import chat, dataset, models, monitoring, publishing, training  # noqa: E402
from .common import CSS, choices_refresh, choices_update, forget_replaced_components, multi_choices_refresh  # noqa: E402

TITLE = "ForgeLLM"
REFRESH_SECONDS = 2.0

__all__ = ["CSS", "TITLE", "build_app"]


def build_app() -> gr.Blocks:
    """Construct the app's Blocks without launching it (call `.queue().launch(css=CSS)` to serve)."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nContinued pre-training and instruction tuning with MLX: train, watch, chat, publish.")
        # Outside gr.Tabs: a timer inside a tab that was never opened does not tick.
        timer = gr.Timer(REFRESH_SECONDS)
        with gr.Tabs() as tabs:
            with gr.Tab("Training", id="training"):
                train_tab = training.build(timer, demo)
            with gr.Tab("Dataset", id="dataset"):
                dataset.build(demo, train_tab)
            with gr.Tab("Monitoring", id="monitoring"):
                monitor_tab = monitoring.build(timer, demo)
            with gr.Tab("Chat", id="chat"):
                chat_tab = chat.build(demo)
            with gr.Tab("Publishing", id="publishing"):
                publish_tab = publishing.build(demo)
            with gr.Tab("Models", id="models"):
                models.build(demo)
        # Monitoring follows the Training tab's current run (e.g. the one just started).
        train_tab.run.change(monitoring.follow_run, train_tab.run, monitor_tab.run)
        # Every run list, in every tab, follows the runs folder: a run started (here, by the CLI or in another
        # browser), ended, checkpointed or deleted shows up within a timer tick, with no page reload; so do
        # new model folders (a fuse) in the Chat and Publishing pickers.
        lists = [
            train_tab.run, train_tab.past_run, monitor_tab.run, monitor_tab.compare_runs, chat_tab.adapter,
            publish_tab.run, chat_tab.model, publish_tab.folder,
        ]  # fmt: skip
        seen = gr.State(None)

        def tick(
            seen: tuple | None, train_run: str | None, past_run: str | None, monitor_run: str | None,
            compared: list[str] | None, adapter: str | None, publish_run: str | None, chat_model: str | None,
            folder: str | None, request: gr.Request,
        ) -> list:  # fmt: skip
            forget_replaced_components(demo, request)  # every tick: the largest growth of a long-open tab
            return _sync_lists(
                seen, train_run, past_run, monitor_run, compared, adapter, publish_run, chat_model, folder
            )

        timer.tick(tick, [seen, *lists], [seen, *lists], show_progress="hidden")
        _wire_best_checkpoints(tabs, monitor_tab, chat_tab, publish_tab)
    return demo


def _sync_lists(
    seen: tuple | None, train_run: str | None, past_run: str | None, monitor_run: str | None,
    compared: list[str] | None, adapter: str | None, publish_run: str | None, chat_model: str | None,
    folder: str | None,
) -> list:  # fmt: skip
    """Fresh choices for every run and model list when the runs or models folder changed (nothing sent
    otherwise); a run that just started running is selected in Monitoring and as the current run."""
    now = (choices.runs_signature(), tuple(workflow.publishable_folders()))
    if now == seen:
        return [gr.skip()] * 9
    follow = choices.newly_running(seen[0] if seen else None, now[0]) if seen is not None else None
    listed = choices.run_choices()
    names = [name for _label, name in listed]
    return [
        now,
        choices_update(listed, follow) if follow else choices_refresh(listed, train_run, choices.running_run()),
        choices_refresh(listed, past_run),
        choices_update(listed, follow) if follow else choices_refresh(listed, monitor_run, names[0] if names else None),
        multi_choices_refresh(listed, compared),
        choices_refresh(choices.adapter_choices(), adapter, choices.NO_ADAPTER),
        choices_refresh(choices.run_choices(with_checkpoints=True), publish_run),
        gr.update(choices=choices.chat_model_choices(chat_model)),
        choices_refresh(workflow.publishable_folders(), folder),
    ]


def _wire_best_checkpoints(
    tabs: gr.Tabs, monitor_tab: monitoring.MonitoringTab, chat_tab: chat.ChatTab, publish_tab: publishing.PublishingTab
) -> None:
    """Monitoring's **Chat with it** / **Publish it** open those tabs with the run and checkpoint chosen."""
    for i, row in enumerate(monitor_tab.best):
        row.chat.click(
            functools.partial(_open_in_chat, i),
            [monitor_tab.run, monitor_tab.best_steps],
            [tabs, chat_tab.model, chat_tab.adapter, chat_tab.checkpoint],
        )
        row.publish.click(
            functools.partial(_open_in_publishing, i),
            [monitor_tab.run, monitor_tab.best_steps],
            [tabs, publish_tab.run, publish_tab.checkpoint, publish_tab.name],
        )


def _open_in_chat(index: int, run_name: str | None, steps: list[int]) -> list:
    if not run_name or index >= len(steps):
        return [gr.skip()] * 4
    base = choices.run_base_model(run_name)
    checkpoints = choices.checkpoint_choices(run_name)
    return [
        gr.Tabs(selected="chat"),
        gr.update(choices=choices.chat_model_choices(base), value=base) if base else gr.skip(),
        choices_update(choices.adapter_choices(), choices.NO_ADAPTER, keep=run_name),
        choices_update(checkpoints, None, keep=str(steps[index])),
    ]


def _open_in_publishing(index: int, run_name: str | None, steps: list[int]) -> list:
    if not run_name or index >= len(steps):
        return [gr.skip()] * 4
    checkpoints = choices.checkpoint_choices(run_name)
    return [
        gr.Tabs(selected="publishing"),
        choices_update(choices.run_choices(with_checkpoints=True), None, keep=run_name),
        choices_update(checkpoints, None, keep=str(steps[index])),
        f"{run_name}-step{steps[index]}-fused",
    ]

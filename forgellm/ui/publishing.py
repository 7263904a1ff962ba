"""Publishing tab: fuse a run's checkpoint into a standalone model folder under models/.

Only a folder *name* is asked for (`choices.validate_output_name`), so the UI cannot write elsewhere.
Pushing to the Hugging Face Hub comes later; there is deliberately no control for it yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import choices
from ..publish.fuse import fuse_run
from ..publish.roundtrip import read_roundtrip
from .common import choices_update, guarded


@dataclass
class PublishingTab:
    run: gr.Dropdown
    checkpoint: gr.Dropdown
    name: gr.Textbox
    fuse: gr.Button
    result: gr.Markdown


def build(demo: gr.Blocks) -> PublishingTab:
    """Lay out the Publishing tab and wire the run and checkpoint pickers and the Fuse button."""
    with gr.Row():
        run = gr.Dropdown(
            choices.run_choices(with_checkpoints=True),
            value=None,
            label="run",
            info="Runs that have at least one checkpoint.",
            scale=3,
        )
        checkpoint = gr.Dropdown([], value=None, label="checkpoint", info="best, latest or a step.", scale=1)
    name = gr.Textbox(
        label="output folder name",
        info="A plain name; the model is written to models/<name>.",
        placeholder="my-model-fused",
    )
    fuse = gr.Button("Fuse", variant="primary")
    result = gr.Markdown()
    tab = PublishingTab(run, checkpoint, name, fuse, result)

    run.change(_run_changed, [run, name], [checkpoint, name])
    fuse.click(_fuse, [run, checkpoint, name], result)
    demo.load(_refresh_runs, run, run)
    return tab


def _refresh_runs(current: str | None) -> Any:
    return choices_update(choices.run_choices(with_checkpoints=True), None, keep=current)


@guarded(lambda _error, *_inputs: [gr.update(choices=[], value=None), gr.skip()])
def _run_changed(run_name: str | None, name: str) -> list[Any]:
    """Offer the run's checkpoints and suggest `<run>-fused` as the folder name."""
    if not run_name:
        return [gr.update(choices=[], value=None), gr.skip()]
    steps = choices.checkpoint_choices(run_name)
    return [gr.update(choices=steps, value=steps[0] if steps else None), f"{run_name}-fused"]


@guarded(lambda error, *_inputs: error)
def _fuse(run_name: str | None, checkpoint: str | None, name: str) -> str:
    """Fuse the checkpoint into models/<name> and say where it went (fusing the same one again is a no-op)."""
    out = choices.validate_output_name(name)
    path = fuse_run(choices.resolve_run(run_name), out, checkpoint or "best")
    check = read_roundtrip(path)
    return (
        f"Fused **{run_name}** (checkpoint {checkpoint or 'best'}) into `{path}`.\n\n"
        f"Round-trip check (reloaded as a user would, against base + adapter): "
        f"{check.summary() if check else 'not recorded'}.\n\n"
        f"Chat with it by choosing **{out.name}** as the base model in the Chat tab (reload the page to list it)."
    )

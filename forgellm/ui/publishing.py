"""Publishing tab: fuse (round-trip checked), quantize or export the adapter, edit the card, push to the Hub.

Only plain folder *names* under models/ are asked for or offered (`choices.validate_output_name`,
`workflow.model_folder`), so the UI cannot write or send anything elsewhere. The token field is a
password box whose value goes straight to the push and is never shown, logged or stored; HF_TOKEN or
the huggingface_hub login are used when it is empty. Fusing and exporting need no token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import choices, mlx_threads
from ..publish import workflow
from ..publish.adapter import export_adapter
from ..publish.fuse import fuse_run
from ..publish.gguf import export_gguf
from ..publish.quantize import BITS, GROUP_SIZES
from ..publish.roundtrip import read_roundtrip
from .common import choices_refresh, choices_update, guarded


@dataclass
class PublishingTab:
    run: gr.Dropdown
    checkpoint: gr.Dropdown
    name: gr.Textbox
    dequantize: gr.Checkbox
    fuse: gr.Button
    export: gr.Button
    result: gr.Markdown
    folder: gr.Dropdown
    bits: gr.Radio
    group_size: gr.Dropdown
    quantize: gr.Button
    card: gr.Code
    save_card: gr.Button
    repo_id: gr.Textbox
    token: gr.Textbox
    public: gr.Checkbox
    allow_failed: gr.Checkbox
    preflight: gr.Button
    push: gr.Button
    push_result: gr.Markdown


def build(demo: gr.Blocks) -> PublishingTab:
    """Lay out the tab: 1. make a model folder, 2. look at its card, 3. push it."""
    gr.Markdown("### 1. Make a model folder from a run")
    with gr.Row():
        run = gr.Dropdown(
            choices.run_choices(with_checkpoints=True), value=None, label="run", info="Runs with a checkpoint.", scale=3
        )
        checkpoint = gr.Dropdown([], value=None, label="checkpoint", info="best, latest or a step.", scale=1)
    with gr.Row():
        name = gr.Textbox(
            label="output folder name",
            info="A plain name; the model is written to models/<name>.",
            placeholder="my-model-fused",
            scale=3,
        )
        dequantize = gr.Checkbox(False, label="de-quantize", info="For a 4-bit base: save the fused model in float.")
    with gr.Row():
        fuse = gr.Button("Fuse (with round-trip check)", variant="primary")
        export = gr.Button("Export the adapter only")
    result = gr.Markdown()

    gr.Markdown("### 2. The model folder and its card")
    folder = gr.Dropdown(workflow.publishable_folders(), value=None, label="model folder under models/")
    with gr.Accordion("Quantize this fused model (optional)", open=False):
        with gr.Row():
            bits = gr.Radio(list(BITS), value=4, label="bits")
            group_size = gr.Dropdown(list(GROUP_SIZES), value=64, label="group size")
            quantize = gr.Button("Quantize (and measure the perplexity cost)")
    with gr.Accordion("GGUF for llama.cpp / Ollama (optional)", open=False):
        gguf_button = gr.Button("Export model.gguf and an Ollama Modelfile into this folder")
    card = gr.Code(
        label="model card (README.md): edit, then save", language="markdown", interactive=True, lines=12, max_lines=30
    )
    save_card = gr.Button("Save the card")

    gr.Markdown("### 3. Push to the Hugging Face Hub")
    with gr.Row():
        repo_id = gr.Textbox(label="repo id", placeholder="your-name/my-model", scale=2)
        token = gr.Textbox(
            label="token (optional)",
            type="password",
            info="Empty: HF_TOKEN or your `hf auth login` token is used. Never stored.",
            scale=2,
        )
    with gr.Row():
        public = gr.Checkbox(False, label="public", info="Repos are private unless you tick this.")
        allow_failed = gr.Checkbox(
            False, label="push even if the round-trip check failed", info="Only when you know why it differs."
        )
    with gr.Row():
        preflight = gr.Button("Preflight (sends nothing)")
        push = gr.Button("Push", variant="primary")
    push_result = gr.Markdown()
    tab = PublishingTab(
        run,
        checkpoint,
        name,
        dequantize,
        fuse,
        export,
        result,
        folder,
        bits,
        group_size,
        quantize,
        card,
        save_card,
        repo_id,
        token,
        public,
        allow_failed,
        preflight,
        push,
        push_result,
    )

    run.change(_run_changed, [run, name, checkpoint], [checkpoint, name])
    fuse.click(_fuse, [run, checkpoint, name, dequantize], [result, folder])
    export.click(_export, [run, checkpoint], [result, folder])
    folder.change(_show_card, folder, card)
    quantize.click(_quantize, [folder, bits, group_size], [result, folder])
    gguf_button.click(_gguf, folder, result)
    save_card.click(_save_card, [folder, card], push_result)
    push_inputs = [folder, repo_id, public, token, allow_failed]
    preflight.click(_preflight, push_inputs, push_result)
    push.click(_push, push_inputs, push_result)
    demo.load(_refresh, [run, folder], [run, folder])
    return tab


def _refresh(current_run: str | None, current_folder: str | None) -> list[Any]:
    return [
        choices_refresh(choices.run_choices(with_checkpoints=True), current_run),
        choices_refresh(workflow.publishable_folders(), current_folder),
    ]


def _folders(select: str | None) -> Any:
    return choices_update(workflow.publishable_folders(), select)


@guarded(lambda _error, *_inputs: [gr.update(choices=[], value=None), gr.skip()])
def _run_changed(run_name: str | None, name: str, checkpoint: str | None = None) -> list[Any]:
    """Offer the run's checkpoints (keeping one already chosen, e.g. by Monitoring's **Publish it**) and
    suggest `<run>-fused` as the folder name."""
    if not run_name:
        return [gr.update(choices=[], value=None), gr.skip()]
    steps = choices.checkpoint_choices(run_name)
    return [choices_update(steps, steps[0] if steps else None, keep=checkpoint), f"{run_name}-fused"]


@guarded(lambda error, *_inputs: [error, gr.skip()])
def _fuse(run_name: str | None, checkpoint: str | None, name: str, dequantize: bool) -> list[Any]:
    """Fuse the checkpoint into models/<name>, with its round-trip check (fusing the same one again is a no-op)."""
    out = choices.validate_output_name(name)
    run_dir = choices.resolve_run(run_name)
    path = mlx_threads.call(fuse_run, run_dir, out, checkpoint or "best", dequantize=bool(dequantize))
    check = read_roundtrip(path)
    text = (
        f"Fused **{run_name}** (checkpoint {checkpoint or 'best'}) into `{path}`.\n\n"
        f"Round-trip check (reloaded as a user would, against base + adapter): "
        f"{check.summary() if check else 'not recorded'}.\n\n"
        f"Chat with it by choosing **{out.name}** as the base model in the Chat tab."
    )
    return [text, _folders(out.name)]


@guarded(lambda error, *_inputs: [error, gr.skip()])
def _export(run_name: str | None, checkpoint: str | None) -> list[Any]:
    """Write the adapter alone (path-free config, card naming the base) to models/<run>-adapter."""
    path = export_adapter(choices.resolve_run(run_name), checkpoint or "best")
    return [f"Exported the adapter of **{run_name}** ({checkpoint or 'best'}) to `{path}`.", _folders(path.name)]


@guarded(lambda error, *_inputs: error)
def _show_card(folder: str | None) -> str:
    return workflow.card_text(folder) if folder else ""


@guarded(lambda error, *_inputs: [error, gr.skip()])
def _quantize(folder: str | None, bits: int, group_size: int) -> list[Any]:
    out, report = mlx_threads.call(workflow.quantize_folder, folder, bits, group_size)
    return [f"Quantized into `{out}`: {report.summary()}.", _folders(out.name)]


@guarded(lambda error, *_inputs: error)
def _gguf(folder: str | None) -> str:
    result = mlx_threads.call(export_gguf, workflow.model_folder(folder))
    template = (
        f"the training chat template as a {result.template_layout} TEMPLATE"
        if result.template_layout
        else "no TEMPLATE (the training chat template is stored in the GGUF)"
    )
    written = f"Wrote `{result.gguf}` (float32) and `{result.modelfile}` with {template}"
    return f"{written}: `ollama create NAME -f Modelfile` in that folder."


@guarded(lambda error, *_inputs: error)
def _save_card(folder: str | None, text: str) -> str:
    return workflow.save_card(folder, text or "")


@guarded(lambda error, *_inputs: error)
def _preflight(folder: str | None, repo_id: str, public: bool, token: str, allow_failed: bool) -> str:
    return workflow.preflight_report(folder, repo_id or "", bool(public), token, bool(allow_failed))


@guarded(lambda error, *_inputs: error)
def _push(folder: str | None, repo_id: str, public: bool, token: str, allow_failed: bool):
    yield from workflow.push_progress(folder, repo_id or "", bool(public), token, bool(allow_failed))

"""Training tab: pick a config, adjust the most used keys, start and stop a trainer subprocess.

The form has one widget per entry of `forms.FORM_FIELDS`, filled from the chosen YAML file; Start
turns the fields that differ from it into overrides (`forms.form_config`) and hands the resolved
config to `launcher.start_in_background`. Which run is current comes from the run folders, so a
restarted app finds running trainers again.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import gradio as gr

from .. import choices, forms, launcher, runs
from ..config import TrainConfig, field_help
from ..errors import ForgeError
from ..models.quantization import quantized_cpu_warning
from ..run_summary import status_summary
from .common import choices_update, guarded, show_error


@dataclass
class TrainingTab:
    config: gr.Dropdown
    fields: dict[str, gr.components.Component]  # one widget per forms.FORM_FIELDS entry, keyed by config key
    start: gr.Button
    stop: gr.Button
    run: gr.Dropdown
    message: gr.Markdown
    status: gr.Markdown

    def form(self) -> list[gr.components.Component]:
        """The form's widgets in `forms.FORM_KEYS` order (the order handlers receive values in)."""
        return [self.fields[key] for key in forms.FORM_KEYS]


def _plain_type(tp: Any) -> Any:
    """`float | None` → float: an optional field gets the widget of its type."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        return options[0] if len(options) == 1 else tp
    return tp


def _widget(field: forms.FormField, base: TrainConfig) -> gr.components.Component:
    """The widget for one form field: its kind, help text and choices come from the config tree."""
    key, label, info = field.key, field.title, field_help()[field.key]
    value = forms.get_key(base, key)
    if key == "model":
        return gr.Dropdown(choices.model_choices(value), value=value, label=label, info=info, allow_custom_value=True)
    if key == "data":
        return gr.Dropdown(
            choices.dataset_choices(value),
            value=choices.as_path_list(value),
            label=label,
            multiselect=True,
            info="Folders or files under dataset/ (one or more).",
        )
    tp = _plain_type(forms.key_type(key))
    if get_origin(tp) is Literal:
        return gr.Radio(forms.literal_choices(key), value=value, label=label, info=info)
    if tp is bool:
        return gr.Checkbox(value=value, label=label, info=info)
    if tp in (int, float):
        return gr.Number(value=value, label=label, info=info, precision=0 if tp is int else None)
    return gr.Textbox(value=value, label=label, info=info)


def _safe_base(choice: str) -> TrainConfig:
    """The chosen config for the initial form; the built-in defaults if the file is broken (shown on load)."""
    try:
        return forms.load_base(choice)
    except ForgeError:
        return forms.load_base(None)


def build(timer: gr.Timer, demo: gr.Blocks) -> TrainingTab:
    """Lay out the Training tab and wire Start, Stop, the config picker and the status line."""
    configs = choices.list_configs()
    choice = choices.default_config_choice(configs)
    base = _safe_base(choice)
    with gr.Row():
        config = gr.Dropdown(
            configs, value=choice, label="config", info="A YAML file in configs/; the form starts from it.", scale=3
        )
        reload = gr.Button("Reload config", size="sm", scale=1)
    fields: dict[str, gr.components.Component] = {}
    for row in sorted({f.row for f in forms.FORM_FIELDS}):
        with gr.Row():
            for field in (f for f in forms.FORM_FIELDS if f.row == row):
                fields[field.key] = _widget(field, base)
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        stop = gr.Button("Stop", variant="stop")
        run = gr.Dropdown(
            choices.run_choices(),
            value=choices.running_run(),
            label="current run",
            info="The run Stop acts on and the status below describes.",
            scale=2,
        )
    status = gr.Markdown()
    message = gr.Markdown()

    tab = TrainingTab(config, fields, start, stop, run, message, status)
    form = tab.form()
    config.change(_load_config, config, [*form, message])
    reload.click(_load_config, config, [*form, message])
    start.click(_start, [config, *form], [message, run])
    stop.click(_stop, run, message)
    run.change(_status, run, status, show_progress="hidden")
    timer.tick(_status, run, status, show_progress="hidden")
    demo.load(
        _refresh_lists, [config, fields["model"], fields["data"], run], [config, fields["model"], fields["data"], run]
    ).then(_load_config, config, [*form, message])
    return tab


def _load_config(choice: str) -> list[Any]:
    """Fill the form from a config file; on a broken file keep the form and show every problem."""
    try:
        cfg = forms.load_base(choice)
    except ForgeError as e:
        return [gr.skip() for _ in forms.FORM_KEYS] + [show_error(e)]
    values = dict(zip(forms.FORM_KEYS, forms.form_values(cfg), strict=True))
    values["data"] = gr.update(choices=choices.dataset_choices(cfg.data), value=choices.as_path_list(cfg.data))
    values["model"] = gr.update(choices=choices.model_choices(cfg.model), value=cfg.model)
    return [*values.values(), ""]


def _refresh_lists(choice: str, model: str, data: list[str], run: str | None) -> list[Any]:
    """Re-read configs/, models/, dataset/ and runs/ for a page that was just opened."""
    configs = choices.list_configs()
    return [
        choices_update(configs, choices.default_config_choice(configs), keep=choice),
        gr.update(choices=choices.model_choices(model)),
        gr.update(choices=choices.dataset_choices(data)),
        choices_update(choices.run_choices(), choices.running_run(), keep=run),
    ]


@guarded(lambda error, *_inputs: (error, gr.skip()))
def _start(choice: str, *values: Any) -> tuple[str, Any]:
    """Validate the form against its config and launch the trainer; the run folder is the result."""
    _path, overrides, cfg = forms.form_config(choice, dict(zip(forms.FORM_KEYS, values, strict=True)))
    choices.require_app_output_dir(launcher.run_parent(cfg))
    launched = launcher.start_in_background(cfg)
    name = launched.run_dir.name
    changed = ", ".join(f"`{o}`" for o in overrides) or "none (the config as is)"
    text = (
        f"Started **{name}** (pid {launched.process.pid}).\n\nRun folder: `{launched.run_dir}`\n\nOverrides: {changed}"
    )
    warning = quantized_cpu_warning(cfg.model)  # QLoRA on a CPU: far slower than LoRA on float32
    if warning:
        text += f"\n\n**Warning:** {warning}"
    return text, choices_update(choices.run_choices(include=name), name)


@guarded(lambda error, *_inputs: error)
def _stop(run_name: str | None) -> str:
    """Ask the run's trainer to finish its step, save and exit; the status turns to 'stopped' then."""
    run_dir = choices.resolve_run(run_name)
    if not launcher.stop(run_dir):
        return f"**{run_name}** is not running (state: {runs.summarize(run_dir).state}); nothing to stop."
    return f"Stop requested for **{run_name}**: the trainer finishes its current step, saves a checkpoint and exits."


def _status(run_name: str | None) -> Any:
    """The current run's one-line status; nothing at all while no run is chosen."""
    if not run_name:
        return gr.skip()
    try:
        return status_summary(runs.summarize(choices.resolve_run(run_name)))
    except ForgeError as e:  # the run folder was removed: say so in the status line, no toast every 2 s
        return e.message

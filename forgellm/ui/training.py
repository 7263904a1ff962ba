"""Training tab: pick a config, adjust any key, estimate, start and stop a trainer subprocess.

The form has one widget per entry of `forms.FORM_FIELDS` (every key of the config tree, grouped), filled
from the chosen YAML file or a past run; Start turns the fields that differ from it into overrides
(`forms.form_config`) and hands the resolved config to `launcher.start_in_background`. The estimate
comes from `forgellm.estimate`. Which run is current comes from the run folders, so a restarted app
finds running trainers again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import choices, forms, launcher, runs
from ..config import TrainConfig, field_help
from ..errors import ForgeError
from ..models.quantization import quantized_cpu_warning
from ..run_summary import status_summary
from .common import choices_refresh, choices_update, guarded, show_error


@dataclass
class TrainingTab:
    config: gr.Dropdown
    fields: dict[str, gr.components.Component]  # one widget per forms.FORM_FIELDS entry, keyed by config key
    start: gr.Button
    stop: gr.Button
    run: gr.Dropdown
    message: gr.Markdown
    status: gr.Markdown
    estimate: gr.Markdown
    estimate_button: gr.Button
    probe_button: gr.Button
    save_name: gr.Textbox
    save_overwrite: gr.Checkbox
    save_button: gr.Button
    past_run: gr.Dropdown
    refill_button: gr.Button

    def form(self) -> list[gr.components.Component]:
        """The form's widgets in `forms.FORM_KEYS` order (the order handlers receive values in)."""
        return [self.fields[key] for key in forms.FORM_KEYS]


FIELDS_PER_ROW = 4


def _widget(field: forms.FormField, base: TrainConfig) -> gr.components.Component:
    """The widget for one form field: its kind, help text and choices come from the config tree."""
    key, label, info = field.key, field.title, field_help()[field.key]
    value = forms.to_widget(key, forms.get_key(base, key))
    kind = forms.widget_kind(key)
    if kind == "model":
        return gr.Dropdown(choices.model_choices(value), value=value, label=label, info=info, allow_custom_value=True)
    if kind == "paths":
        return gr.Dropdown(
            choices.dataset_choices(value),
            value=value,
            label=label,
            multiselect=True,
            info=f"{info} Folders or files under dataset/ (one or more).",
        )
    if kind == "path":
        return gr.Dropdown(choices.dataset_choices(value), value=value, label=label, info=f"{info} Under dataset/.")
    if kind == "choice":
        return gr.Radio(forms.literal_choices(key), value=value, label=label, info=info)
    if kind == "bool":
        return gr.Checkbox(value=value, label=label, info=info)
    if kind in ("int", "float"):
        empty = " Empty = null." if forms.is_optional(key) else ""
        return gr.Number(value=value, label=label, info=info + empty, precision=0 if kind == "int" else None)
    placeholder = (
        "comma-separated; empty = null" if kind == "list" else "empty = null" if forms.is_optional(key) else ""
    )
    return gr.Textbox(value=value, label=label, info=info, placeholder=placeholder)


def _safe_base(choice: str) -> TrainConfig:
    """The chosen config for the initial form; the built-in defaults if the file is broken (shown on load)."""
    try:
        return forms.load_base(choice)
    except ForgeError:
        return forms.load_base(None)


def _form_groups(base: TrainConfig) -> dict[str, gr.components.Component]:
    """Every config key as a widget, group by group; rarely used groups collapsed."""
    fields: dict[str, gr.components.Component] = {}
    for group in forms.GROUPS:
        members = forms.fields_of(group.name)
        if not members:
            continue
        with gr.Accordion(group.title, open=group.open):
            for i in range(0, len(members), FIELDS_PER_ROW):
                with gr.Row():
                    for field in members[i : i + FIELDS_PER_ROW]:
                        fields[field.key] = _widget(field, base)
    return fields


def build(timer: gr.Timer, demo: gr.Blocks) -> TrainingTab:
    """Lay out the Training tab and wire Start, Stop, the estimate, saving, refilling and the status line."""
    configs = choices.list_configs()
    choice = choices.default_config_choice(configs)
    base = _safe_base(choice)
    with gr.Row():
        config = gr.Dropdown(
            configs, value=choice, label="config", info="A YAML file in configs/; the form starts from it.", scale=3
        )
        reload = gr.Button("Reload config", size="sm", scale=1)
    with gr.Accordion("Fill the form from a past run", open=False):
        with gr.Row():
            past_run = gr.Dropdown(choices.run_choices(), value=None, label="run", scale=3)
            refill = gr.Button("Fill the form from this run", size="sm", scale=1)
    fields = _form_groups(base)
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                start = gr.Button("Start training", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            run = gr.Dropdown(
                choices.run_choices(),
                value=choices.running_run(),
                label="current run",
                info="The run Stop acts on and the status below describes.",
            )
        with gr.Column(scale=3):
            estimate = gr.Markdown("Press **Estimate** for peak memory and time before starting.")
            with gr.Row():
                estimate_button = gr.Button("Estimate memory", size="sm")
                probe_button = gr.Button("Measure speed (a few real steps)", size="sm")
    status = gr.Markdown()
    message = gr.Markdown()
    with gr.Accordion("Save the form as a config file", open=False):
        with gr.Row():
            save_name = gr.Textbox(label="name", placeholder="my-run", info="Saved as configs/<name>.yaml.", scale=3)
            save_overwrite = gr.Checkbox(False, label="overwrite", info="Replace an existing file of that name.")
            save_button = gr.Button("Save as config", size="sm", scale=1)

    tab = TrainingTab(
        config, fields, start, stop, run, message, status, estimate, estimate_button, probe_button,
        save_name, save_overwrite, save_button, past_run, refill,
    )  # fmt: skip
    form = tab.form()
    config.change(_load_config, config, [*form, message])
    reload.click(_load_config, config, [*form, message])
    refill.click(_refill, [config, past_run], [*form, message])
    start.click(_start, [config, *form], [message, run])
    stop.click(_stop, run, message)
    estimate_button.click(_estimate, [config, *form], estimate)
    probe_button.click(_probe, [config, *form], estimate)
    save_button.click(_save, [config, save_name, save_overwrite, *form], [message, config])
    run.change(_status, run, status, show_progress="hidden")
    timer.tick(_status, run, status, show_progress="hidden")
    demo.load(
        _refresh_lists, [config, fields["model"], fields["data"], run], [config, fields["model"], fields["data"], run]
    ).then(_load_config, config, [*form, message])
    return tab


def _form_updates(cfg: TrainConfig) -> list[Any]:
    """Widget updates that show `cfg` (the path and model pickers get fresh choices too)."""
    values = dict(zip(forms.FORM_KEYS, forms.form_values(cfg), strict=True))
    for key in forms.DATASET_PATH_KEYS:
        values[key] = gr.update(choices=choices.dataset_choices(values[key]), value=values[key])
    values["model"] = gr.update(choices=choices.model_choices(cfg.model), value=cfg.model)
    return list(values.values())


def _load_config(choice: str) -> list[Any]:
    """Fill the form from a config file; on a broken file keep the form and show every problem."""
    try:
        cfg = forms.load_base(choice)
    except ForgeError as e:
        return [gr.skip() for _ in forms.FORM_KEYS] + [show_error(e)]
    return [*_form_updates(cfg), ""]


@guarded(lambda error, *_inputs: [*(gr.skip() for _ in forms.FORM_KEYS), error])
def _refill(choice: str, run_name: str | None) -> list[Any]:
    """Fill the form with what a past run trained with (a new run name and the config's output folder)."""
    cfg = forms.run_config(choices.resolve_run(run_name), forms.load_base(choice))
    note = f"Form filled from **{run_name}**'s config.yaml (its run name left out, so Start makes a new run)."
    return [*_form_updates(cfg), note]


def _refresh_lists(choice: str, model: str, data: list[str], run: str | None) -> list[Any]:
    """Re-read configs/, models/, dataset/ and runs/ for a page that was just opened."""
    configs = choices.list_configs()
    return [
        choices_refresh(configs, choice, choices.default_config_choice(configs)),
        gr.update(choices=choices.model_choices(model)),
        gr.update(choices=choices.dataset_choices(data)),
        choices_refresh(choices.run_choices(), run, choices.running_run()),
    ]


def _form_cfg(choice: str, values: tuple[Any, ...]) -> tuple[list[str], TrainConfig]:
    _path, overrides, cfg = forms.form_config(choice, dict(zip(forms.FORM_KEYS, values, strict=True)))
    return overrides, cfg


@guarded(lambda error, *_inputs: error)
def _estimate(choice: str, *values: Any) -> str:
    """Peak memory of the run the form describes, with and without gradient checkpointing, and what fits."""
    from .. import estimate

    _overrides, cfg = _form_cfg(choice, values)
    return estimate.summary_markdown(estimate.estimate_memory(cfg))


@guarded(lambda error, *_inputs: error)
def _probe(choice: str, *values: Any, progress=gr.Progress()) -> str:  # noqa: B008 - Gradio's progress hook
    """The memory estimate plus the wall time, scaled from a few real training steps run now."""
    from .. import estimate

    _overrides, cfg = _form_cfg(choice, values)
    progress(0, desc="Running a few real training steps to measure the speed…")
    return estimate.summary_markdown(estimate.estimate_memory(cfg), estimate.estimate_time_from_probe(cfg))


@guarded(lambda error, *_inputs: (error, gr.skip()))
def _save(choice: str, name: str, overwrite: bool, *values: Any) -> tuple[str, Any]:
    """Write the form (every key, validated) to configs/<name>.yaml and select it."""
    _overrides, cfg = _form_cfg(choice, values)
    path = forms.save_config(cfg, name, overwrite=bool(overwrite), based_on=choice)
    configs = choices.list_configs()
    keep = f"configs/{path.name}"
    return f"Saved **{keep}**.", choices_update(configs, choice, keep=keep)


@guarded(lambda error, *_inputs: (error, gr.skip()))
def _start(choice: str, *values: Any) -> tuple[str, Any]:
    """Validate the form against its config and launch the trainer; the run folder is the result."""
    _path, overrides, cfg = forms.form_config(choice, dict(zip(forms.FORM_KEYS, values, strict=True)))
    choices.require_app_output_dir(launcher.run_parent(cfg))
    # The data as the config file names it too, not only a changed field: the app reads only dataset/.
    choices.require_dataset_paths(cfg.data)
    if cfg.mixture.general is not None:
        choices.require_dataset_paths(cfg.mixture.general)
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
    """Ask the run's trainer to finish its step, save and exit; pressed again, it ends at once."""
    run_dir = choices.resolve_run(run_name)
    outcome = launcher.request_stop(run_dir)
    if outcome == launcher.NOT_RUNNING:
        return f"**{run_name}** is not running (state: {runs.summarize(run_dir).state}); nothing to stop."
    if outcome == launcher.REPEATED:
        return f"Stop was just requested for **{run_name}**. To end it at once, press Stop again in a moment."
    if outcome == launcher.ENDING_NOW:
        return (
            f"Second Stop for **{run_name}**: the trainer ends now, without finishing its current step; "
            "its last complete checkpoint is kept."
        )
    return (
        f"Stop requested for **{run_name}**: the trainer finishes its current step, saves a checkpoint and exits. "
        "Press Stop again to end it at once (that step is not saved)."
    )


def _status(run_name: str | None) -> Any:
    """The current run's one-line status; nothing at all while no run is chosen."""
    if not run_name:
        return gr.skip()
    try:
        return status_summary(runs.summarize(choices.resolve_run(run_name)))
    except ForgeError as e:  # the run folder was removed: say so in the status line, no toast every 2 s
        return e.message

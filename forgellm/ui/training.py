"""Training tab: pick a config, adjust the most used keys, start and stop a trainer subprocess.

The form is filled from the chosen YAML file; Start turns the fields that differ from it into
`key=value` overrides (`appstate.build_overrides`) and calls `process.start_training`. Which run is
current comes from the run folders, so a restarted app finds running trainers again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import appstate, process, runs
from ..config import field_help
from ..errors import ForgeError
from .common import choices_update, show_error


@dataclass
class TrainingTab:
    config: gr.Dropdown
    model: gr.Dropdown
    train_type: gr.Radio
    fine_tune_type: gr.Radio
    data: gr.Dropdown
    iters: gr.Number
    batch_size: gr.Number
    learning_rate: gr.Number
    max_seq_length: gr.Number
    lora_rank: gr.Number
    val_fraction: gr.Number
    steps_per_eval: gr.Number
    save_every: gr.Number
    seed: gr.Number
    start: gr.Button
    stop: gr.Button
    run: gr.Dropdown
    message: gr.Markdown
    status: gr.Markdown

    def form(self) -> list[gr.components.Component]:
        """The form's widgets in `appstate.FORM_KEYS` order (the order handlers receive values in)."""
        return [
            self.model, self.train_type, self.fine_tune_type, self.data, self.iters, self.batch_size,
            self.learning_rate, self.max_seq_length, self.lora_rank, self.val_fraction,
            self.steps_per_eval, self.save_every, self.seed,
        ]  # fmt: skip


def _number(key: str, value: Any, label: str | None = None) -> gr.Number:
    """A Number for a TrainConfig key: integer keys get precision 0, help text from field_help()."""
    is_int = appstate.key_type(key) is int
    return gr.Number(value=value, label=label or key, info=field_help()[key], precision=0 if is_int else None)


def _radio(key: str, value: Any) -> gr.Radio:
    return gr.Radio(appstate.literal_choices(key), value=value, label=key, info=field_help()[key])


def _safe_base(choice: str) -> Any:
    """The chosen config for the initial form; the built-in defaults if the file is broken (shown on load)."""
    try:
        return appstate.load_base(choice)
    except ForgeError:
        return appstate.load_base(None)


def build(timer: gr.Timer, demo: gr.Blocks) -> TrainingTab:
    """Lay out the Training tab and wire Start, Stop, the config picker and the status line."""
    configs = appstate.list_configs()
    choice = appstate.default_config_choice(configs)
    base = _safe_base(choice)
    with gr.Row():
        config = gr.Dropdown(configs, value=choice, label="config", info="A YAML file in configs/; the form starts from it.", scale=3)
        reload = gr.Button("Reload config", size="sm", scale=1)
    with gr.Row():
        model = gr.Dropdown(appstate.model_choices(base.model), value=base.model, label="model", info=field_help()["model"],
                            allow_custom_value=True)  # fmt: skip
        data = gr.Dropdown(appstate.dataset_choices(base.data), value=appstate.as_path_list(base.data), label="data",
                           multiselect=True, info="Folders or files under dataset/ (one or more).")  # fmt: skip
    with gr.Row():
        train_type = _radio("train_type", base.train_type)
        fine_tune_type = _radio("fine_tune_type", base.fine_tune_type)
    with gr.Row():
        iters = _number("iters", base.iters)
        batch_size = _number("batch_size", base.batch_size)
        learning_rate = _number("learning_rate", base.learning_rate)
        max_seq_length = _number("max_seq_length", base.max_seq_length)
    with gr.Row():
        lora_rank = _number("lora_parameters.rank", base.lora_parameters.rank, label="LoRA rank")
        val_fraction = _number("val_fraction", base.val_fraction)
        steps_per_eval = _number("steps_per_eval", base.steps_per_eval)
        save_every = _number("save_every", base.save_every)
        seed = _number("seed", base.seed)
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        stop = gr.Button("Stop", variant="stop")
        run = gr.Dropdown(appstate.run_choices(), value=appstate.running_run(), label="current run",
                          info="The run Stop acts on and the status below describes.", scale=2)  # fmt: skip
    status = gr.Markdown()
    message = gr.Markdown()

    tab = TrainingTab(config, model, train_type, fine_tune_type, data, iters, batch_size, learning_rate, max_seq_length,
                      lora_rank, val_fraction, steps_per_eval, save_every, seed, start, stop, run, message, status)  # fmt: skip
    form = tab.form()
    config.change(_load_config, config, [*form, message])
    reload.click(_load_config, config, [*form, message])
    start.click(_start, [config, *form], [message, run])
    stop.click(_stop, run, message)
    run.change(_status, run, status, show_progress="hidden")
    timer.tick(_status, run, status, show_progress="hidden")
    demo.load(_refresh_lists, [config, model, data, run], [config, model, data, run]).then(
        _load_config, config, [*form, message]
    )
    return tab


def _load_config(choice: str) -> list[Any]:
    """Fill the form from a config file; on a broken file keep the form and show every problem."""
    try:
        cfg = appstate.load_base(choice)
    except ForgeError as e:
        return [gr.skip() for _ in appstate.FORM_KEYS] + [show_error(e)]
    values = appstate.form_values(cfg)
    data_index = appstate.FORM_KEYS.index("data")
    model_index = appstate.FORM_KEYS.index("model")
    values[data_index] = gr.update(choices=appstate.dataset_choices(cfg.data), value=appstate.as_path_list(cfg.data))
    values[model_index] = gr.update(choices=appstate.model_choices(cfg.model), value=cfg.model)
    return [*values, ""]


def _refresh_lists(choice: str, model: str, data: list[str], run: str | None) -> list[Any]:
    """Re-read configs/, models/, dataset/ and runs/ for a page that was just opened."""
    configs = appstate.list_configs()
    return [
        choices_update(configs, appstate.default_config_choice(configs), keep=choice),
        gr.update(choices=appstate.model_choices(model)),
        gr.update(choices=appstate.dataset_choices(data)),
        choices_update(appstate.run_choices(), appstate.running_run(), keep=run),
    ]


def _start(choice: str, *values: Any) -> tuple[str, Any]:
    """Validate the form against its config and launch the trainer; the run folder is the result."""
    try:
        path, overrides, _cfg = appstate.form_config(choice, dict(zip(appstate.FORM_KEYS, values)))
        run_dir, proc = process.start_training(path, overrides)
    except Exception as e:  # noqa: BLE001 - shown to the user (and logged when unexpected), never swallowed
        return show_error(e), gr.skip()
    # Reap the trainer when it exits so it does not linger as a zombie of the app; the run folder,
    # not this thread, is what the app reads.
    threading.Thread(target=proc.wait, name=f"reap-trainer-{proc.pid}", daemon=True).start()
    changed = ", ".join(f"`{o}`" for o in overrides) or "none (the config as is)"
    text = f"Started **{run_dir.name}** (pid {proc.pid}).\n\nRun folder: `{run_dir}`\n\nOverrides: {changed}"
    return text, choices_update(appstate.run_choices(include=run_dir.name), run_dir.name)


def _stop(run_name: str | None) -> str:
    """Ask the run's trainer to finish its step, save and exit; the status turns to 'stopped' then."""
    try:
        run_dir = appstate.resolve_run(run_name)
        if not process.stop(run_dir):
            state = runs.effective_state(runs.read_status(run_dir))
            return f"**{run_name}** is not running (state: {state}); nothing to stop."
    except ForgeError as e:
        return show_error(e)
    return f"Stop requested for **{run_name}**: the trainer finishes its current step, saves a checkpoint and exits."


def _status(run_name: str | None) -> Any:
    """The current run's one-line status; nothing at all while no run is chosen."""
    if not run_name:
        return gr.skip()
    try:
        return appstate.status_summary(runs.read_status(appstate.resolve_run(run_name)))
    except ForgeError as e:
        return e.message

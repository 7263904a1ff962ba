"""The Training form ↔ the config tree, without Gradio.

The form is one list, `FORM_FIELDS`: the Training tab builds one widget per entry (its kind, help
text and choices come from the `TrainConfig` field), handlers receive values in this order, and
`build_overrides` turns what changed into `key=value` overrides. Adding a field is one line here.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from . import choices, config
from .config import TrainConfig


@dataclass(frozen=True)
class FormField:
    key: str  # dotted TrainConfig key
    row: int  # layout row in the Training tab
    label: str | None = None  # defaults to the key

    @property
    def title(self) -> str:
        return self.label or self.key


FORM_FIELDS: tuple[FormField, ...] = (
    FormField("model", 0),
    FormField("data", 0),
    FormField("train_type", 1),
    FormField("fine_tune_type", 1),
    FormField("iters", 2),
    FormField("batch_size", 2),
    FormField("learning_rate", 2),
    FormField("max_seq_length", 2),
    FormField("lora_parameters.rank", 3, "LoRA rank"),
    FormField("val_fraction", 3),
    FormField("steps_per_eval", 3),
    FormField("save_every", 3),
    FormField("seed", 3),
)
FORM_KEYS: tuple[str, ...] = tuple(f.key for f in FORM_FIELDS)


def load_base(choice: str | None) -> TrainConfig:
    """The config a choice names, validated (the built-in defaults for None)."""
    return config.load(choices.config_path(choice))


def get_key(cfg: Any, key: str) -> Any:
    """The value of a dotted key (`lora_parameters.rank`) in a config tree."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def key_type(key: str) -> Any:
    """The declared type of a dotted TrainConfig key (e.g. `int`, `Literal['cpt', 'ift']`)."""
    tp: Any = TrainConfig
    for part in key.split("."):
        tp = typing.get_type_hints(tp)[part]
    return tp


def literal_choices(key: str) -> list[str]:
    """The allowed values of a Literal-typed key, straight from the config tree (no second list)."""
    tp = key_type(key)
    if get_origin(tp) is not Literal:
        raise TypeError(f"{key} is not a Literal field")
    return list(get_args(tp))


def form_values(cfg: TrainConfig) -> list[Any]:
    """The form's values for `cfg`, in FORM_KEYS order."""
    return [get_key(cfg, key) for key in FORM_KEYS]


def _normalise(value: Any, like: Any) -> Any:
    """Undo widget typing (a Number gives 8.0 for an int field, a Textbox gives ' x ')."""
    if isinstance(value, str):
        value = value.strip()
    if isinstance(like, int) and not isinstance(like, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _data_value(value: Any) -> Any:
    """The multi-select's list back to a config value: one path stays a string."""
    items = [v.strip() for v in choices.as_path_list(value) if isinstance(v, str) and v.strip()]
    if not items:
        return None
    return items[0] if len(items) == 1 else items


def build_overrides(base: TrainConfig, values: Mapping[str, Any]) -> list[str]:
    """Turn form values into `key=value` overrides: only the values that differ from `base`.

    Args:
        base: The config the form was filled from (the chosen YAML file or the defaults).
        values: Dotted key (one of FORM_KEYS) → the widget's value.

    Returns:
        Overrides for `config.load(path, overrides)`, in FORM_KEYS order. Values are written as JSON
        (valid YAML that quotes strings, so a model named `123` stays a string). An emptied field
        becomes `key=null`, which validation reports instead of silently using a default.

    Raises:
        ForgeError: when `data` was changed to a path outside dataset/, or `model` to a path outside
            the project (a path in the YAML file itself is left alone).
    """
    overrides = []
    for key in FORM_KEYS:
        if key not in values:
            continue
        old = get_key(base, key)
        new = _normalise(_data_value(values[key]) if key == "data" else values[key], old)
        if new == old:
            continue
        if key == "data":
            choices.require_dataset_paths(new)
        if key == "model":
            choices.check_model_choice(new)
        overrides.append(f"{key}={json.dumps(new)}")
    return overrides


def form_config(choice: str | None, values: Mapping[str, Any]) -> tuple[Path | None, list[str], TrainConfig]:
    """The config file, overrides and validated config that the Training form describes right now."""
    path = choices.config_path(choice)
    overrides = build_overrides(config.load(path), values)
    return path, overrides, config.load(path, overrides)

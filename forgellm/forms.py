"""The Training form ↔ the config tree, without Gradio.

Every leaf key of `TrainConfig` is a form field (`FORM_FIELDS`), in the group its config field names
(`config.field_groups`), with a widget kind derived from its type (`widget_kind`): adding a key to the
config tree adds its widget, help text and choices to the app with no UI code. Handlers receive values
in `FORM_KEYS` order; `build_overrides` turns what changed into `key=value` overrides; `save_config`
writes the form as a YAML file in configs/; `run_config` reads a past run's config back into the form.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from . import choices, config, paths, runs
from .atomic import write_text
from .config import TrainConfig
from .errors import ForgeError


@dataclass(frozen=True)
class FormGroup:
    name: str  # as in the config fields' `group` metadata
    title: str
    open: bool  # rarely used groups start collapsed


GROUPS: tuple[FormGroup, ...] = (
    FormGroup("run", "Run: name, seed, folder", True),
    FormGroup("model", "Model and method", True),
    FormGroup("data", "Data and mixing", True),
    FormGroup("optimisation", "Optimisation and schedule", True),
    FormGroup("length", "Length and evaluation", True),
    FormGroup("early_stopping", "Early stopping", False),
    FormGroup("checkpoints", "Checkpoints", False),
    FormGroup("distributed", "Distributed (several processes or machines)", False),
    FormGroup("other", "Other settings", False),
)


@dataclass(frozen=True)
class FormField:
    key: str  # dotted TrainConfig key
    group: str

    @property
    def title(self) -> str:
        return self.key


FORM_FIELDS: tuple[FormField, ...] = tuple(FormField(key, group) for key, group in config.field_groups().items())
FORM_KEYS: tuple[str, ...] = tuple(f.key for f in FORM_FIELDS)
# Keys holding paths the app may only point inside dataset/ (the form cannot reach other folders).
DATASET_PATH_KEYS = ("data", "mixture.general")


def fields_of(group: str) -> list[FormField]:
    return [f for f in FORM_FIELDS if f.group == group]


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


def _without_none(tp: Any) -> tuple[Any, bool]:
    """`float | None` → (float, True); `str | list[str]` stays as it is."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        optional = len(options) < len(get_args(tp))
        return (options[0] if len(options) == 1 else tp), optional
    return tp, False


def is_optional(key: str) -> bool:
    """An empty widget means null for this key (rather than a problem)."""
    return _without_none(key_type(key))[1]


def widget_kind(key: str) -> str:
    """How the form shows a key: model, paths (several dataset paths), path (one dataset path), choice,
    bool, int, float, list (comma-separated text) or text."""
    if key == "model":
        return "model"
    if key == "data":
        return "paths"
    if key in DATASET_PATH_KEYS:
        return "path"
    tp, _ = _without_none(key_type(key))
    if get_origin(tp) is Literal:
        return "choice"
    if get_origin(tp) is list:
        return "list"
    return {bool: "bool", int: "int", float: "float"}.get(tp, "text")


def literal_choices(key: str) -> list[str]:
    """The allowed values of a Literal-typed key, straight from the config tree (no second list)."""
    tp, _ = _without_none(key_type(key))
    if get_origin(tp) is not Literal:
        raise TypeError(f"{key} is not a Literal field")
    return list(get_args(tp))


def to_widget(key: str, value: Any) -> Any:
    """A config value as its widget shows it (a list as comma-separated text, null as empty)."""
    kind = widget_kind(key)
    if kind == "paths":
        return choices.as_path_list(value)
    if kind == "list":
        return ", ".join(value) if value else ""
    if kind == "text" and value is None:
        return ""
    return value


def form_values(cfg: TrainConfig) -> list[Any]:
    """The form's widget values for `cfg`, in FORM_KEYS order."""
    return [to_widget(key, get_key(cfg, key)) for key in FORM_KEYS]


def from_widget(key: str, value: Any, like: Any) -> Any:
    """A widget's value back to a config value; `like` is the current config value (for number types).

    Undoes widget typing (a Number gives 8.0 for an int field, a Textbox gives ' x '); an emptied field of
    an optional key is null, of any other key stays empty so validation reports it.
    """
    kind = widget_kind(key)
    if kind == "paths":
        items = [v.strip() for v in choices.as_path_list(value) if isinstance(v, str) and v.strip()]
        return None if not items else items[0] if len(items) == 1 else items
    if isinstance(value, str):
        value = value.strip()
    if kind == "list":
        items = [v.strip() for v in (value or "").split(",") if v.strip()]
        return items or None
    if value in ("", None) and is_optional(key):
        return None
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(like, int) and not isinstance(like, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_reachable(key: str, value: Any) -> None:
    """A changed path must stay inside the project's folders (the UI reaches nothing else)."""
    if key in DATASET_PATH_KEYS and value is not None:
        choices.require_dataset_paths(value)
    if key == "model":
        choices.check_model_choice(value)
    if key == "hostfile" and value is not None:
        path = Path(value)
        path = path if path.is_absolute() else paths.PROJECT_ROOT / path
        if not path.resolve().is_relative_to(paths.PROJECT_ROOT.resolve()):
            raise ForgeError(f"{value!r} is outside the project folder", "hostfile", "put the hostfile in configs/")


def build_overrides(base: TrainConfig, values: Mapping[str, Any]) -> list[str]:
    """Turn form values into `key=value` overrides: only the values that differ from `base`.

    Args:
        base: The config the form was filled from (the chosen YAML file or the defaults).
        values: Dotted key (one of FORM_KEYS) → the widget's value.

    Returns:
        Overrides for `config.load(path, overrides)`, in FORM_KEYS order. Values are written as JSON
        (valid YAML that quotes strings, so a model named `123` stays a string). An emptied field
        becomes `key=null`: null for an optional key, reported by validation for any other.

    Raises:
        ForgeError: when a dataset path (`data`, `mixture.general`) was changed to a path outside
            dataset/, `model` to a path outside the project, or `hostfile` to a file outside it (a path
            in the YAML file itself is left alone).
    """
    overrides = []
    for key in FORM_KEYS:
        if key not in values:
            continue
        old = get_key(base, key)
        new = from_widget(key, values[key], old)
        if new == old:
            continue
        _check_reachable(key, new)
        overrides.append(f"{key}={json.dumps(new)}")
    return overrides


def form_config(choice: str | None, values: Mapping[str, Any]) -> tuple[Path | None, list[str], TrainConfig]:
    """The config file, overrides and validated config that the Training form describes right now."""
    path = choices.config_path(choice)
    overrides = build_overrides(config.load(path), values)
    return path, overrides, config.load(path, overrides)


# ---- configs in and out ------------------------------------------------------------------------------


def config_file_for(name: str) -> Path:
    """configs/<name>.yaml for a plain name typed in the app (no folders, no leading dot)."""
    name = (name or "").strip()
    stem = name[:-5] if name.endswith(".yaml") else name[:-4] if name.endswith(".yml") else name
    if not stem or stem.startswith(".") or any(c in stem for c in "/\\\0:") or stem in (".", ".."):
        raise ForgeError(
            f"{name!r} is not a plain file name",
            "config name",
            "type a name such as my-run (saved as configs/my-run.yaml)",
        )
    return choices.CONFIGS_DIR / f"{stem}.yaml"


def save_config(cfg: TrainConfig, name: str, overwrite: bool = False, based_on: str | None = None) -> Path:
    """Write `cfg` (every key) to configs/<name>.yaml; an existing file only with `overwrite`."""
    path = config_file_for(name)
    if path.exists() and not overwrite:
        raise ForgeError(
            f"{path.name} already exists in configs/", str(path), "choose another name, or tick overwrite to replace it"
        )
    header = f"# Written by ForgeLLM's Training tab{f' from {based_on}' if based_on else ''}.\n"
    write_text(path, header + config.dump_yaml(cfg))
    return path


def run_config(run_dir: Path, base: TrainConfig) -> TrainConfig:
    """A past run's config for the form: what it trained with, except where it went (its folder name and
    output folder come from `base`, so Start makes a new run instead of colliding with the old one)."""
    path = Path(run_dir) / runs.CONFIG_FILE
    if not path.is_file():
        raise ForgeError("the run has no config.yaml", str(run_dir), "pick another run")
    cfg = config.load(path)
    return replace(cfg, run_name=base.run_name, output_dir=base.output_dir)

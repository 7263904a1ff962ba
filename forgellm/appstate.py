"""What the app's forms and lists mean, without Gradio: choices, overrides, validation, status text.

The Gradio tab modules (`forgellm/ui/`) only wire widgets to these functions and to the library, so
everything here is testable without a browser or even without Gradio installed. Nothing here keeps
state: every list is read again from the project folders (configs/, dataset/, runs/, models/), so a
restarted app re-attaches to whatever the run folders say.
"""

from __future__ import annotations

import json
import math
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from . import config, paths, runs
from .config import TrainConfig
from .errors import ForgeError
from .models.registry import BUILTINS, list_local_models

CONFIGS_DIR = paths.PROJECT_ROOT / "configs"
DEFAULT_CONFIG = "configs/cpt-tiny.yaml"
# Offered beside the YAML files so the form works before any config file exists.
DEFAULTS_CHOICE = "(built-in defaults)"
NO_ADAPTER = "none"
DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
# Dotted TrainConfig keys shown in the Training form, in form order (tests check each one exists).
FORM_KEYS: tuple[str, ...] = (
    "model",
    "train_type",
    "fine_tune_type",
    "data",
    "iters",
    "batch_size",
    "learning_rate",
    "max_seq_length",
    "lora_parameters.rank",
    "val_fraction",
    "steps_per_eval",
    "save_every",
    "seed",
)
_MAX_DATASET_CHOICES = 1000  # a dropdown longer than this is unusable anyway


# --------------------------------------------------------------------------------------------------
# Config files and the Training form


def list_configs(folder: Path = CONFIGS_DIR) -> list[str]:
    """`configs/*.yaml` as project-relative paths (sorted), followed by the built-in defaults choice."""
    found = sorted(f"{folder.name}/{p.name}" for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return [*found, DEFAULTS_CHOICE]


def default_config_choice(choices: Sequence[str]) -> str:
    """`configs/cpt-tiny.yaml` when it exists, else the first config, else the built-in defaults."""
    if DEFAULT_CONFIG in choices:
        return DEFAULT_CONFIG
    return choices[0] if choices else DEFAULTS_CHOICE


def config_path(choice: str | None) -> Path | None:
    """The YAML file a config choice names (None = the built-in defaults); only files under configs/."""
    if not choice or choice == DEFAULTS_CHOICE:
        return None
    path = (paths.PROJECT_ROOT / choice).resolve()
    if path.parent != CONFIGS_DIR.resolve() or path.suffix != ".yaml":
        raise ForgeError(f"{choice!r} is not a file in configs/", "config", "pick a config from the list")
    return path


def load_base(choice: str | None) -> TrainConfig:
    """The config a choice names, validated (the built-in defaults for None)."""
    return config.load(config_path(choice))


def get_key(cfg: Any, key: str) -> Any:
    """The value of a dotted key (`lora_parameters.rank`) in a config tree."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def key_type(key: str) -> Any:
    """The declared type of a dotted TrainConfig key (e.g. `int`, `Literal['cpt', 'ift']`)."""
    cls: Any = TrainConfig
    tp: Any = None
    for part in key.split("."):
        tp = typing.get_type_hints(cls)[part]
        cls = tp
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


def _yaml_value(value: Any) -> str:
    """A value written so that `config.parse_overrides` (YAML) reads back the same value and type.

    JSON is valid YAML and quotes strings, so a model named `123` or `null` stays a string.
    """
    return json.dumps(value)


def build_overrides(base: TrainConfig, values: Mapping[str, Any]) -> list[str]:
    """Turn form values into `key=value` overrides: only the values that differ from `base`.

    Args:
        base: The config the form was filled from (the chosen YAML file or the defaults).
        values: Dotted key (one of FORM_KEYS) → the widget's value.

    Returns:
        Overrides for `config.load(path, overrides)` / `process.start_training`, in FORM_KEYS order.
        An emptied field becomes `key=null`, which validation reports instead of silently using a default.

    Raises:
        ForgeError: when `data` was changed to a path outside the project's dataset/ folder (the UI
            offers only dataset/ entries; a path in the YAML file itself is left alone).
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
            for item in as_path_list(new):
                if not is_dataset_path(item):
                    raise ForgeError(f"{item!r} is not a folder or file under dataset/", "data", "pick from the list")
        if key == "model":
            check_model_choice(new)
        overrides.append(f"{key}={_yaml_value(new)}")
    return overrides


def form_config(choice: str | None, values: Mapping[str, Any]) -> tuple[Path | None, list[str], TrainConfig]:
    """The config file, overrides and validated config that the Training form describes right now."""
    path = config_path(choice)
    base = config.load(path)
    overrides = build_overrides(base, values)
    return path, overrides, config.load(path, overrides)


# --------------------------------------------------------------------------------------------------
# Paths the UI may offer: dataset/ entries, run folders, output model folders


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def is_dataset_path(value: str) -> bool:
    """True when `value` (as written in a config) is an existing folder or file under dataset/."""
    if not isinstance(value, str) or not value.strip():
        return False
    path = Path(value)
    path = path if path.is_absolute() else paths.PROJECT_ROOT / path
    return path.exists() and _inside(path, paths.dataset_dir())


def as_path_list(value: str | list[str] | None) -> list[str]:
    """A `data` value (one path or a list of them) as a list."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _data_value(value: Any) -> Any:
    """The multi-select's list back to a config value: one path stays a string."""
    items = [v.strip() for v in as_path_list(value) if isinstance(v, str) and v.strip()]
    if not items:
        return None
    return items[0] if len(items) == 1 else items


def dataset_choices(current: str | list[str] | None = None) -> list[str]:
    """Folders and files under dataset/, project-relative (`dataset/beekeeping`), hidden ones left out.

    `current` (a config's own `data` value) is kept in the list even when it lies elsewhere, so the form
    can show what the YAML file says; only a *changed* value must come from dataset/.
    """
    root = paths.dataset_dir()
    out: list[str] = []
    if root.is_dir():
        for folder, dirs, files in os.walk(root):  # followlinks=False: a link cannot lead us outside
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in [*dirs, *sorted(f for f in files if not f.startswith("."))]:
                path = Path(folder) / name
                if _inside(path, root):
                    out.append(path.relative_to(paths.PROJECT_ROOT).as_posix())
            if len(out) >= _MAX_DATASET_CHOICES:
                break
    out = sorted(out[:_MAX_DATASET_CHOICES])
    for item in reversed(as_path_list(current)):
        if item not in out:
            out.insert(0, item)
    return out


def check_model_choice(value: str) -> str:
    """A model typed into the UI: a built-in name, a folder under the project or models/, or a Hub id.

    Arbitrary filesystem paths are refused: nothing outside the project's folders is reachable from
    the browser (the CLI and YAML files are not limited).
    """
    from .models.registry import BUILTINS, HUB_ALIASES

    value = (value or "").strip()
    if value in BUILTINS or value in HUB_ALIASES:
        return value
    parts = Path(value).parts
    if not value or value.startswith(("/", "~", "\\")) or ".." in parts or ":" in value:
        raise ForgeError(f"{value!r} is not allowed here", "model", "pick a built-in model, a folder under models/, or a Hub id like org/name")
    for root in (paths.PROJECT_ROOT, paths.models_dir()):
        candidate = root / value
        if candidate.exists() and not _inside(candidate, root):
            raise ForgeError(f"{value!r} leads outside the project", "model", "pick a folder under models/")
    return value


def validate_output_name(name: str) -> Path:
    """The folder under models/ that a fused model named `name` goes to; rejects anything path-like.

    Raises:
        ForgeError: for an empty name, a path separator, `..`, a leading dot, a built-in model's name,
            or an existing folder that is not a fused model (it would be replaced).
    """
    name = (name or "").strip()
    fix = "use a plain folder name such as my-model-fused"
    if not name:
        raise ForgeError("the output folder name is empty", "output name", fix)
    if any(sep in name for sep in ("/", "\\", os.sep, "\0")) or name.startswith(".") or ".." in name:
        raise ForgeError(f"{name!r} is not a plain folder name", "output name", fix)
    if name in BUILTINS:
        raise ForgeError(f"{name!r} is a built-in model's folder", "output name", fix)
    out = paths.models_dir() / name
    from .publish.fuse import PROVENANCE_FILE

    if out.exists() and not (out / PROVENANCE_FILE).is_file():
        raise ForgeError(f"{out} already exists and is not a fused model", "output name", "choose another name")
    return out


def resolve_run(name: str | None) -> Path:
    """The run folder for a run name picked in the UI (only folders directly under runs/)."""
    if not name or any(sep in name for sep in ("/", "\\", os.sep)) or name.startswith("."):
        raise ForgeError(f"{name!r} is not a run name", "run", "pick a run from the list")
    run_dir = paths.runs_dir() / name
    if not run_dir.is_dir():  # not is_run_dir(): a just-started run's folder is empty for a moment
        raise ForgeError("no such run", str(run_dir), "refresh the run list")
    return run_dir


# --------------------------------------------------------------------------------------------------
# Choices for dropdowns (re-read on every call)


def run_choices(with_checkpoints: bool = False, include: str | None = None) -> list[tuple[str, str]]:
    """(label, run name) for every run under runs/, newest first; optionally only runs with checkpoints.

    `include` names a run that must be listed even before its trainer has written anything (a run
    that was just started has an empty folder for a moment).
    """
    out = []
    for run in runs.list_runs(paths.runs_dir()):
        if with_checkpoints and not runs.checkpoint_steps(Path(run["path"])):
            continue
        out.append((f"{run['name']} ({run['state']})", run["name"]))
    if include and include not in [name for _label, name in out]:
        out.insert(0, (f"{include} (starting)", include))
    return out


def running_run() -> str | None:
    """The newest run whose trainer is alive (what the Training tab's Stop acts on by default)."""
    for run in runs.list_runs(paths.runs_dir()):
        if run["state"] == "running":
            return run["name"]
    return None


def checkpoint_choices(run_name: str | None) -> list[str]:
    """`best`, `latest` and every complete checkpoint step (newest first); empty without checkpoints."""
    if not run_name or run_name == NO_ADAPTER:
        return []
    steps = runs.checkpoint_steps(resolve_run(run_name))
    return ["best", "latest", *(str(s) for s in reversed(steps))] if steps else []


def adapter_choices() -> list[tuple[str, str]]:
    """"none" followed by every run that has a checkpoint to chat with."""
    return [(NO_ADAPTER, NO_ADAPTER), *run_choices(with_checkpoints=True)]


def model_choices(current: str | None = None) -> list[str]:
    """Built-in model names and local model folders under models/ (fused models included)."""
    names = list(BUILTINS)
    names += [m["name"] for m in list_local_models() if m["name"] not in BUILTINS]
    if current and current not in names:
        names.insert(0, current)
    return names


def run_base_model(run_name: str) -> str | None:
    """The `model` a run was trained on, from its config.yaml (None when unreadable)."""
    path = resolve_run(run_name) / runs.CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data.get("model") if isinstance(data, dict) else None


def models_table() -> list[list[str]]:
    """Rows (name, built, description, path) for the Models tab."""
    return [[m["name"], m["built"], m["description"], m["path"]] for m in list_local_models()]


# --------------------------------------------------------------------------------------------------
# Monitoring


def run_signature(run_dir: Path) -> tuple:
    """Changes whenever anything the Monitoring tab shows could change; cheap (a few stat calls).

    The effective state is part of it because a trainer that dies changes no file.
    """
    sizes = []
    for name in (runs.STATUS_FILE, runs.METRICS_FILE, runs.LOG_FILE):
        try:
            st = (run_dir / name).stat()
            sizes.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            sizes.append(None)
    return (str(run_dir), runs.effective_state(runs.read_status(run_dir)), *sizes)


def format_duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s` or `42s`."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def status_summary(status: Mapping[str, Any]) -> str:
    """One Markdown line for a run: state, step/total, epoch, tokens/s, ETA, best validation, error."""
    if not status:
        return "No status yet (the trainer has not started writing)."
    state = runs.effective_state(dict(status))
    parts = [f"**{state}**", f"step {status.get('step', 0)}/{status.get('total_steps') or '?'}"]
    if status.get("epoch") is not None:
        parts.append(f"epoch {status['epoch']:.2f}")
    if status.get("tokens_per_sec"):
        parts.append(f"{status['tokens_per_sec']:,.0f} tok/s")
    if state == "running" and status.get("eta_s") is not None:
        parts.append(f"ETA {format_duration(status['eta_s'])}")
    if status.get("best_val_loss") is not None:
        parts.append(f"best val loss {status['best_val_loss']:.4f} at step {status.get('best_step', '?')}")
    if status.get("stop_reason"):
        parts.append(f"stopped because: {status['stop_reason']}")
    line = " · ".join(parts)
    if state == "failed":
        error = status.get("error") or "the trainer process is gone without recording why (see the log)"
        line += f"\n\n**Error:** {error}"
    return line


# --------------------------------------------------------------------------------------------------
# Chat


def message_text(content: Any) -> str:
    """A Chatbot message's content as plain text.

    Gradio 6 delivers a Chatbot's messages to a handler with content as a list of parts
    (`[{"type": "text", "text": ...}]`); API callers send strings. Non-text parts are left out.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return str(content)


def chat_messages(history: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """History from the Chatbot → plain `{"role", "content"}` messages for the chat template."""
    out = []
    for m in history:
        if m.get("role") in ("user", "assistant", "system"):
            out.append({"role": m["role"], "content": message_text(m.get("content"))})
    return out

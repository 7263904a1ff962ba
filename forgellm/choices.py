"""What the app may offer and accept: dropdown choices and the path guards behind them, without Gradio.

Every list is read again from the project folders (configs/, dataset/, runs/, models/) on each call,
so a restarted app re-attaches to whatever is on disk. Nothing outside the project's folders is
reachable through these: a config must be a file in configs/, data a relative path under dataset/ with
no symbolic link on the way or inside, a run a folder directly under runs/, a model a built-in, a folder
under the project or models/, or a Hub id (only a cached one while Hub downloads are off).
"""

from __future__ import annotations

import os
from pathlib import Path

from . import paths, runs
from .errors import ForgeError
from .models.registry import (
    BUILTINS,
    HUB_ALIASES,
    downloads_off_error,
    hub_downloads_allowed,
    list_local_models,
    looks_like_hub_id,
)

CONFIGS_DIR = paths.PROJECT_ROOT / "configs"
DEFAULT_CONFIG = "configs/cpt-tiny.yaml"
# Offered beside the YAML files so the form works before any config file exists.
DEFAULTS_CHOICE = "(built-in defaults)"
NO_ADAPTER = "none"
_MAX_DATASET_CHOICES = 1000  # a dropdown longer than this is unusable anyway


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


# ---- config files ----------------------------------------------------------------------------------


def list_configs(folder: Path = CONFIGS_DIR) -> list[str]:
    """`configs/*.yaml` as project-relative paths (sorted), followed by the built-in defaults choice."""
    found = sorted(f"{folder.name}/{p.name}" for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return [*found, DEFAULTS_CHOICE]


def default_config_choice(choices: list[str]) -> str:
    """`configs/cpt-tiny.yaml` when it exists, else the first config, else the built-in defaults."""
    if DEFAULT_CONFIG in choices:
        return DEFAULT_CONFIG
    return choices[0] if choices else DEFAULTS_CHOICE


def config_path(choice: str | None) -> Path | None:
    """The YAML file a config choice names (None = the built-in defaults); only files in configs/."""
    if not choice or choice == DEFAULTS_CHOICE:
        return None
    path = (paths.PROJECT_ROOT / choice).resolve()
    if path.parent != CONFIGS_DIR.resolve() or path.suffix != ".yaml":
        raise ForgeError(f"{choice!r} is not a file in configs/", "config", "pick a config from the list")
    return path


# ---- data ------------------------------------------------------------------------------------------


def as_path_list(value: str | list[str] | None) -> list[str]:
    """A `data` value (one path or a list of them) as a list."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _first_link(path: Path, root: Path) -> Path | None:
    """The first symbolic link from `root` down to `path`, or inside `path` when it is a folder (hidden
    entries, which ingestion never reads, left out); None when there is none."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
    if path.is_dir():
        for folder, dirs, files in os.walk(path):  # followlinks=False: a linked folder is reported, not entered
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in [*dirs, *sorted(f for f in files if not f.startswith("."))]:
                if (Path(folder) / name).is_symlink():
                    return Path(folder) / name
    return None


def dataset_path_problem(value: str) -> str | None:
    """Why the app may not read `value` (a `data` entry), or None when it may.

    It must be a relative path (no `..`) to an existing folder or file under dataset/, with no symbolic
    link on the way or anywhere inside: a link could lead the app to any file on the machine.
    """
    if not isinstance(value, str) or not value.strip():
        return "it is empty"
    path = Path(value.strip())
    if path.is_absolute() or value.startswith("~") or ".." in path.parts:
        return "absolute paths and .. are refused (use a path such as dataset/beekeeping)"
    root = paths.dataset_dir()
    full = paths.PROJECT_ROOT / path
    if not full.is_relative_to(root):
        return "it is not inside dataset/"
    link = _first_link(full, root)
    if link is not None:
        return f"{link.relative_to(paths.PROJECT_ROOT).as_posix()} is a symbolic link (the app reads only real files)"
    if not full.exists():
        return "it does not exist"
    if not _inside(full, root):
        return "it leads outside dataset/"
    return None


def is_dataset_path(value: str) -> bool:
    """True when the app may read `value` (as written in a config): see `dataset_path_problem`."""
    return dataset_path_problem(value) is None


def require_dataset_paths(value: str | list[str] | None) -> None:
    """Refuse any `data` entry that is not a real folder or file under dataset/ (see `dataset_path_problem`)."""
    for item in as_path_list(value):
        problem = dataset_path_problem(item)
        if problem is not None:
            raise ForgeError(
                f"{item!r} is not a folder or file under dataset/ that the app may read: {problem}",
                "data",
                "pick from the list; copy a file into dataset/ rather than linking it",
            )


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
                if not path.is_symlink() and _inside(path, root):
                    out.append(path.relative_to(paths.PROJECT_ROOT).as_posix())
            if len(out) >= _MAX_DATASET_CHOICES:
                break
    out = sorted(out[:_MAX_DATASET_CHOICES])
    for item in reversed(as_path_list(current)):
        if item not in out:
            out.insert(0, item)
    return out


# ---- models ----------------------------------------------------------------------------------------


def check_model_choice(value: str) -> str:
    """A model typed into the UI: a built-in name, a folder under the project or models/, or a Hub id.

    Arbitrary filesystem paths are refused: nothing outside the project's folders is reachable from
    the browser (the CLI and YAML files are not limited). So is a name that the app's working directory
    would answer instead of the project (model lookup tries a relative path as given first), and, while
    Hub downloads are off, a Hub id that is not in the local cache.
    """
    value = (value or "").strip()
    if value in BUILTINS or value in HUB_ALIASES:
        return value
    parts = Path(value).parts
    if not value or value.startswith(("/", "~", "\\")) or ".." in parts or ":" in value:
        raise ForgeError(
            f"{value!r} is not allowed here",
            "model",
            "pick a built-in model, a folder under models/, or a Hub id like org/name",
        )
    roots = (paths.PROJECT_ROOT, paths.models_dir())
    for root in roots:
        candidate = root / value
        if candidate.exists() and not _inside(candidate, root):
            raise ForgeError(f"{value!r} leads outside the project", "model", "pick a folder under models/")
    if _answered_by_working_dir(value, roots):
        raise ForgeError(
            f"{value!r} also names a folder in the app's working directory, outside the project",
            "model",
            "start the app with `python app.py` (it looks up models in the project folder), or pick another model",
        )
    if _needs_download(value, roots):
        raise downloads_off_error(value)
    return value


def _answered_by_working_dir(value: str, roots: tuple[Path, ...]) -> bool:
    """True when a folder `value` in the current directory, not one under `roots`, is what lookup would load."""
    here = Path(value)  # relative: the working directory's, which model lookup tries first
    if not here.is_dir():
        return False
    return not any((root / value).is_dir() and (root / value).resolve() == here.resolve() for root in roots)


def _needs_download(value: str, roots: tuple[Path, ...]) -> bool:
    """True when `value` can only come from the Hub while downloads are off: a Hub id with no local copy."""
    if not looks_like_hub_id(value) or hub_downloads_allowed() or any((root / value).is_dir() for root in roots):
        return False
    from .model_sources import hf_cached_models

    return value not in hf_cached_models()


def model_choices(current: str | None = None) -> list[str]:
    """Built-in model names and local model folders under models/ (fused models included)."""
    names = list(BUILTINS)
    names += [m["name"] for m in list_local_models() if m["name"] not in BUILTINS]
    if current and current not in names:
        names.insert(0, current)
    return names


def chat_model_choices(current: str | None = None) -> list[tuple[str, str]]:
    """(label, name) for the Chat tab's model picker: built-ins, models/ folders (fused marked), cached Hub
    models that look loadable; `current` (e.g. a Hub id typed in) is kept at the top."""
    from .model_sources import model_sources

    found = [(source.label, source.name) for source in model_sources()]
    if current and current not in [name for _label, name in found]:
        found.insert(0, (current, current))
    return found


def models_table() -> list[list[str]]:
    """Rows (name, built, description, path) for the Models tab."""
    return [[m["name"], m["built"], m["description"], m["path"]] for m in list_local_models()]


def validate_output_name(name: str) -> Path:
    """The folder under models/ that a fused model named `name` goes to; rejects anything path-like.

    Raises:
        ForgeError: for an empty name, a path separator, `..`, a leading dot, a built-in model's name,
            or an existing folder that is not an earlier fuse output (it would be replaced).
    """
    from .atomic import require_replaceable
    from .publish.files import FUSE_RECORD as PROVENANCE_FILE

    name = (name or "").strip()
    fix = "use a plain folder name such as my-model-fused"
    if not name:
        raise ForgeError("the output folder name is empty", "output name", fix)
    if any(sep in name for sep in ("/", "\\", os.sep, "\0")) or name.startswith(".") or ".." in name:
        raise ForgeError(f"{name!r} is not a plain folder name", "output name", fix)
    if name in BUILTINS:
        raise ForgeError(f"{name!r} is a built-in model's folder", "output name", fix)
    out = paths.models_dir() / name
    require_replaceable(out, PROVENANCE_FILE, "choose another name")
    return out


# ---- runs ------------------------------------------------------------------------------------------


def resolve_run(name: str | None) -> Path:
    """The run folder for a run name picked in the UI (only folders directly under runs/)."""
    if not name or any(sep in name for sep in ("/", "\\", os.sep)) or name.startswith("."):
        raise ForgeError(f"{name!r} is not a run name", "run", "pick a run from the list")
    run_dir = paths.runs_dir() / name
    if not run_dir.is_dir():
        raise ForgeError("no such run", str(run_dir), "refresh the run list")
    return run_dir


def run_choices(with_checkpoints: bool = False, include: str | None = None) -> list[tuple[str, str]]:
    """(label, run name) for every run under runs/, newest first; optionally only runs with checkpoints.

    `include` names a run that must be listed even before its trainer has written anything.
    """
    out = []
    for run in runs.list_runs(paths.runs_dir()):
        if with_checkpoints and not runs.checkpoint_steps(run.path):
            continue
        out.append((f"{run.name} ({run.state})", run.name))
    if include and include not in [name for _label, name in out]:
        out.insert(0, (f"{include} (starting)", include))
    return out


def runs_signature() -> tuple[tuple[str, str, bool], ...]:
    """(name, state, has a checkpoint) of every run: changes when a run starts, ends, gets its first
    checkpoint or is deleted, which is when every run list in the app must be refreshed."""
    return tuple(
        (run.name, run.state, bool(runs.checkpoint_steps(run.path))) for run in runs.list_runs(paths.runs_dir())
    )


def newly_running(before: tuple | None, after: tuple) -> str | None:
    """A run that is running now and was not running (or not there) before: the one to follow."""
    was_running = {name for name, state, _ in before or () if state == "running"}
    return next((name for name, state, _ in after if state == "running" and name not in was_running), None)


def running_run() -> str | None:
    """The newest run whose trainer is alive (what the Training tab's Stop acts on by default)."""
    return next((run.name for run in runs.list_runs(paths.runs_dir()) if run.state == "running"), None)


def checkpoint_choices(run_name: str | None) -> list[str]:
    """`best`, `latest` and every complete checkpoint step (newest first); empty without checkpoints."""
    if not run_name or run_name == NO_ADAPTER:
        return []
    steps = runs.checkpoint_steps(resolve_run(run_name))
    return [runs.BEST_LINK, "latest", *(str(s) for s in reversed(steps))] if steps else []


def adapter_choices() -> list[tuple[str, str]]:
    """ "none" followed by every run that has a checkpoint to chat with."""
    return [(NO_ADAPTER, NO_ADAPTER), *run_choices(with_checkpoints=True)]


def run_base_model(run_name: str) -> str | None:
    """The base model of a run's latest checkpoint, as the user named it (None when it has none)."""
    try:
        return runs.base_model_name(runs.resolve_checkpoint(resolve_run(run_name), "latest"))
    except ForgeError:
        return None


def require_app_output_dir(run_parent: Path) -> None:
    """The app starts runs only under runs/: it lists, follows and stops runs there, and writes
    nowhere else (the CLI takes any output_dir)."""
    if run_parent.resolve() != paths.runs_dir().resolve():
        raise ForgeError(
            f"this config's output_dir is {run_parent}, outside the app's runs/ folder",
            "output_dir",
            "remove output_dir from the config (or set it to runs) to start it here, or start it with the CLI",
        )

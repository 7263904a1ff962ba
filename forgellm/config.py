"""The one typed config tree for a training run.

The YAML files in `configs/`, the CLI's `--set key=value` overrides and the app's Training form all bind
to `TrainConfig`. Keys follow mlx-lm's LoRA YAML where they overlap (`model`, `data`, `fine_tune_type`,
`num_layers`, `batch_size`, `iters`, `learning_rate`, `lora_parameters`, ...); ForgeLLM's own keys sit
beside them. Loading coerces types (PyYAML reads `1e-5` as a string), rejects unknown keys with the
closest valid name, and reports every problem at once with the YAML line where it was found.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import FILE, FOLDER, MISSING, ConfigError, ForgeError, path_kind


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field carrying a help string (shown by the CLI, the UI and the docs)."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        factory = (lambda d=default: type(d)(d)) if not dataclasses.is_dataclass(default) else type(default)
        return field(default_factory=factory, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class LoraParameters:
    rank: int = _f(8, "LoRA rank r: width of the low-rank update.")
    scale: float = _f(20.0, "Multiplier on the LoRA update (mlx-lm's `scale`, not `alpha`).")
    dropout: float = _f(0.0, "Dropout on the LoRA input during training.")
    keys: list[str] | None = _f(
        None, "Module names to adapt, e.g. [self_attn.q_proj, self_attn.v_proj]; null = every linear layer."
    )


@dataclass
class Mixture:
    general: str | None = _f(None, "Folder or file of general text mixed into CPT training; null = no mixing.")
    ratio: float = _f(0.8, "Share of training tokens that come from the domain data (the rest is general).")


@dataclass
class EarlyStopping:
    patience: int = _f(0, "Stop after this many evaluations without improvement; 0 = never stop early.")
    min_delta: float = _f(0.0, "An evaluation must beat the best validation loss by more than this to count.")
    overfit_threshold: float | None = _f(
        None, "Stop when validation loss rises this fraction above its best (0.1 = 10%); null = off."
    )


@dataclass
class TrainConfig:
    # What to train
    model: str = _f(
        "tiny", "Base model: a built-in name (tiny, smollm2-135m-instruct[-4bit]), a folder or a Hub id.", group="model"
    )
    train_type: Literal["cpt", "ift"] = _f(
        "cpt", "cpt = continued pre-training on raw text; ift = instruction tuning.", group="model"
    )
    fine_tune_type: Literal["lora", "dora", "full"] = _f("lora", "lora, dora or full fine-tuning.", group="model")
    num_layers: int = _f(-1, "Number of final transformer blocks to adapt; -1 = all.", group="model")
    lora_parameters: LoraParameters = _f(LoraParameters(), "LoRA/DoRA settings.", group="model")
    trust_remote_code: bool = _f(
        False, "Allow a Hub model's own tokenizer code to run (off unless you trust it).", group="model"
    )

    # Data
    data: str | list[str] = _f(
        "dataset/beekeeping",
        "Folder or file of training documents, or a list of them (relative paths: project folder).",
        group="data",
    )
    text_field: str = _f("text", "Field holding the text in .jsonl/.json/.csv CPT files.", group="data")
    val_fraction: float = _f(
        0.1, "Fraction of documents held out for validation (split by document, seeded).", group="data"
    )
    max_seq_length: int = _f(256, "Tokens per training window (CPT) or longest example (IFT).", group="data")
    mixture: Mixture = _f(Mixture(), "Mix a general corpus into CPT training.", group="data")
    mask_prompt: bool = _f(True, "IFT: train only on assistant tokens.", group="data")
    overlong: Literal["drop", "truncate"] = _f(
        "drop", "IFT: what to do with an example longer than max_seq_length.", group="data"
    )

    # Optimisation
    optimizer: Literal["adamw", "adam", "sgd"] = _f("adamw", "Optimizer.", group="optimisation")
    learning_rate: float = _f(1e-3, "Peak learning rate.", group="optimisation")
    weight_decay: float = _f(0.0, "Decoupled weight decay (AdamW) or L2 (SGD).", group="optimisation")
    lr_schedule: Literal["cosine", "linear", "constant"] = _f("cosine", "Decay after warmup.", group="optimisation")
    warmup_steps: int = _f(
        0, "Linear warmup from 0 to learning_rate over this many optimizer steps.", group="optimisation"
    )
    min_learning_rate: float = _f(0.0, "Learning rate at the end of a cosine or linear decay.", group="optimisation")
    batch_size: int = _f(
        8, "Sequences per step (the global batch; split across hosts when distributed).", group="optimisation"
    )
    grad_accumulation_steps: int = _f(
        1, "Micro-batches whose gradients are summed before one optimizer step.", group="optimisation"
    )
    max_grad_norm: float | None = _f(
        1.0, "Clip gradients to this global norm; null = no clipping.", group="optimisation"
    )
    grad_checkpoint: bool = _f(
        False, "Recompute activations in the backward pass to save memory.", group="optimisation"
    )

    # Length
    iters: int = _f(200, "Optimizer steps to train for (ignored when epochs is set).", group="length")
    epochs: float | None = _f(None, "Passes over the training set; overrides iters when set.", group="length")

    # Reporting, evaluation, checkpoints
    steps_per_report: int = _f(10, "Steps between training-loss reports.", group="length")
    steps_per_eval: int = _f(50, "Steps between validation evaluations (one also runs first and last).", group="length")
    val_batches: int = _f(-1, "Validation batches per evaluation; -1 = the whole validation set.", group="length")
    save_every: int = _f(100, "Steps between checkpoints (one is also saved at the end).", group="checkpoints")
    keep_last: int = _f(2, "Checkpoints kept besides the best one.", group="checkpoints")
    early_stopping: EarlyStopping = _f(
        EarlyStopping(), "When to stop before the planned length.", group="early_stopping"
    )

    # Reproducibility and placement
    seed: int = _f(0, "Seed for initialisation, data order and dropout.", group="run")
    output_dir: str = _f("runs", "Parent folder of run folders (relative paths: project home).", group="run")
    run_name: str | None = _f(None, "Run folder name; null = <timestamp>-<train_type>-<model>.", group="run")
    hosts: list[str] | None = _f(
        None,
        "IP addresses for data-parallel training via mlx.launch (repeat one for several ranks); null = one process.",
        group="distributed",
    )
    hostfile: str | None = _f(None, "An mlx.launch hostfile (JSON) instead of hosts.", group="distributed")
    distributed_backend: Literal["ring", "mpi"] = _f(
        "ring", "mlx.launch backend: ring (TCP, default) or mpi.", group="distributed"
    )


# --------------------------------------------------------------------------------------------------
# Loading: YAML with line numbers, coercion, validation


@dataclass
class _Source:
    """Maps dotted key paths to 'file:line' so every problem can point at its place."""

    name: str | None = None
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        if self.name and line:
            return f"{self.name}:{line} ({key})"
        return f"{self.name} ({key})" if self.name else key


def _yaml_error(error: yaml.YAMLError, name: str | None) -> ForgeError:
    """Where the parser noticed the problem, and where the construct it was reading began: an unclosed
    `[` or quote is noticed lines later, and the line it opened on is the one to fix."""
    mark, context_mark = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
    what = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        what += f"; {context} that starts on line {context_mark.line + 1}"
    where = f"{name}:{mark.line + 1}" if name and mark else name
    return ForgeError(f"not valid YAML ({what})", where, "fix the YAML syntax")


def _compose_with_lines(text: str, name: str | None) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse YAML into plain data plus the line number of every mapping key."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        # A tag PyYAML's safe loader refuses (!!python/object) or a list as a key fails only here.
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, name) from e
    if root is None:
        return {}, {}
    if not isinstance(root, yaml.MappingNode):
        raise ForgeError("a config must be a mapping of key: value", name, "see configs/cpt-tiny.yaml")
    return data, _key_lines(root, name)


MAX_CONFIG_KEYS = 10_000  # the config tree has ~50; more is a generated file or an alias bomb


def _key_lines(root: yaml.MappingNode, name: str | None) -> dict[str, int]:
    """The line of every (dotted) key; a key set twice is an error, as PyYAML silently keeps the last one."""
    lines: dict[str, int] = {}
    repeated: list[str] = []
    inside: list[yaml.Node] = []  # the mappings being walked: an alias to one of them (`&a {b: *a}`) is a cycle

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            if any(node is outer for outer in inside):
                raise ForgeError(
                    "a YAML alias refers to a mapping that contains it (a cycle)",
                    f"{name}:{node.start_mark.line + 1}" if name else prefix.rstrip("."),
                    "write the values out instead of the *alias",
                )
            inside.append(node)
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                line = key_node.start_mark.line + 1
                if key in lines:
                    where = f"{name}:{line} ({key})" if name else key
                    repeated.append(f"{where}: key {key!r} is set twice (lines {lines[key]} and {line}); keep one")
                lines[key] = line
                if len(lines) > MAX_CONFIG_KEYS:  # nested aliases can multiply keys exponentially
                    raise ForgeError(f"the config has more than {MAX_CONFIG_KEYS:,} keys", name, _CONFIG_FIX)
                walk(value_node, key + ".")
            inside.pop()

    walk(root, "")
    if repeated:
        raise ConfigError(repeated, name)
    return lines


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, problems: list[str], src: _Source) -> Any:
    """Convert `value` to type `tp`, appending a problem (and returning None) when impossible."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            optional = type(None) in get_args(tp)
            return None if optional else _coerce(value, options[0], key, problems, src)
        lists = [a for a in options if get_origin(a) is list]
        if isinstance(value, list) and lists:  # `str | list[str]`: a YAML list stays a list
            return _coerce(value, lists[0], key, problems, src)
        return _coerce(value, options[0], key, problems, src)
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(f"{src.where(key)}: {_shown(value)} is not one of {', '.join(map(repr, allowed))}{hint}")
        return None
    if origin is list:
        (item_tp,) = get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            problems.append(f"{src.where(key)}: expected a list, got {_shown(value)}")
            return None
        return [_coerce(v, item_tp, f"{key}[{i}]", problems, src) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{src.where(key)}: expected a mapping of {tp.__name__} settings, got {_shown(value)}")
            return tp()
        return _build(tp, value, problems, src, prefix=key + ".")
    return _coerce_scalar(value, tp, key, problems, src)


def _coerce_scalar(value: Any, tp: type, key: str, problems: list[str], src: _Source) -> Any:
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return _finite(float(value), key, problems, src)
        if tp is str:
            if value is None or isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int written as 1e400
        problems.append(f"{src.where(key)}: expected {_type_name(tp)}, got {_shown(value)}")
        return None
    return value


def _finite(value: float, key: str, problems: list[str], src: _Source) -> float | None:
    """inf and nan pass every `>` check the wrong way or fail only mid-training (a NaN loss at step 2)."""
    if math.isfinite(value):
        return value
    problems.append(f"{src.where(key)}: must be a finite number, got {value}; use an ordinary number")
    return None


def _shown(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut short: a config line can be megabytes long, and the message must stay readable."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# Names other fine-tuning tools use for our keys: the error then says which key to use instead.
_ALIASES = {
    "alpha": "LoRA uses 'scale' (mlx-lm's name), not 'alpha': scale = alpha / rank",
    "lora_alpha": "LoRA uses 'scale' (mlx-lm's name), not 'alpha': scale = alpha / rank",
    "lr": "the key is 'learning_rate'",
    "lora_rank": "the key is lora_parameters.rank",
    "adapter_path": "the run folder holds the adapter; set output_dir/run_name instead",
    "gradient_accumulation_steps": "the key is 'grad_accumulation_steps'",
    "max_seq_len": "the key is 'max_seq_length'",
}


def _build(cls: type, data: dict[str, Any], problems: list[str], src: _Source, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            alias = _ALIASES.get(str(key))
            hint = f"; did you mean {prefix}{close[0]!r}?" if close else ""
            hint = f"; {alias}" if alias else hint
            problems.append(f"{src.where(full)}: unknown key {full!r}{hint}")
            continue
        before = len(problems)
        coerced = _coerce(value, hints[key], full, problems, src)
        if len(problems) == before:  # a failed coercion leaves the default in place
            kwargs[key] = coerced
    return cls(**kwargs)


def _check_ranges(cfg: TrainConfig, problems: list[str], src: _Source) -> None:
    """Value checks that types alone cannot express."""

    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            problems.append(f"{src.where(key)}: {message}")

    need(cfg.batch_size >= 1, "batch_size", f"must be >= 1, got {cfg.batch_size}")
    need(cfg.iters >= 1, "iters", f"must be >= 1, got {cfg.iters}")
    need(cfg.epochs is None or cfg.epochs > 0, "epochs", f"must be > 0 or null, got {cfg.epochs}")
    need(cfg.learning_rate > 0, "learning_rate", f"must be > 0, got {cfg.learning_rate}")
    lr_ok = cfg.learning_rate > 0  # a bad learning_rate is reported once, not again through min_learning_rate
    need(
        not lr_ok or 0 <= cfg.min_learning_rate <= cfg.learning_rate,
        "min_learning_rate",
        "must be between 0 and learning_rate",
    )
    need(cfg.warmup_steps >= 0, "warmup_steps", "must be >= 0")
    need(cfg.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(cfg.grad_accumulation_steps >= 1, "grad_accumulation_steps", "must be >= 1")
    need(cfg.max_grad_norm is None or cfg.max_grad_norm > 0, "max_grad_norm", "must be > 0 or null")
    need(cfg.max_seq_length >= 8, "max_seq_length", f"must be >= 8, got {cfg.max_seq_length}")
    need(0 < cfg.val_fraction < 1, "val_fraction", f"must be between 0 and 1 (exclusive), got {cfg.val_fraction}")
    need(cfg.num_layers == -1 or cfg.num_layers >= 1, "num_layers", "must be -1 (all) or >= 1")
    need(cfg.steps_per_report >= 1, "steps_per_report", "must be >= 1")
    need(cfg.steps_per_eval >= 1, "steps_per_eval", "must be >= 1")
    need(cfg.val_batches == -1 or cfg.val_batches >= 1, "val_batches", "must be -1 (all) or >= 1")
    need(cfg.save_every >= 1, "save_every", "must be >= 1")
    need(cfg.keep_last >= 1, "keep_last", "must be >= 1")
    need(cfg.lora_parameters.rank >= 1, "lora_parameters.rank", "must be >= 1")
    need(0 <= cfg.lora_parameters.dropout < 1, "lora_parameters.dropout", "must be in [0, 1)")
    need(0 < cfg.mixture.ratio <= 1, "mixture.ratio", f"must be in (0, 1], got {cfg.mixture.ratio}")
    need(cfg.early_stopping.patience >= 0, "early_stopping.patience", "must be >= 0")
    need(cfg.early_stopping.min_delta >= 0, "early_stopping.min_delta", "must be >= 0")
    threshold = cfg.early_stopping.overfit_threshold
    need(threshold is None or threshold > 0, "early_stopping.overfit_threshold", "must be > 0 or null")
    need(bool(cfg.model.strip()), "model", "must name a model")
    name = cfg.run_name
    plain = name is None or (bool(name.strip()) and not name.startswith(".") and not any(c in name for c in "/\\\0"))
    need(plain, "run_name", f"must be a plain folder name (no '/', no leading '.'), got {_shown(name)}")
    data = cfg.data if isinstance(cfg.data, list) else [cfg.data]
    need(bool(data) and all(isinstance(d, str) and d.strip() for d in data), "data", "must name a folder or file")


def from_dict(data: dict[str, Any], source: str | None = None, lines: dict[str, int] | None = None) -> TrainConfig:
    """Build a validated TrainConfig from plain data; raises ConfigError listing every problem."""
    src = _Source(source, lines or {})
    problems: list[str] = []
    cfg = _build(TrainConfig, data, problems, src)
    _check_ranges(cfg, problems, src)  # a key that failed to coerce kept its (valid) default
    if problems:
        raise ConfigError(problems, source)
    return cfg


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `--set key=value` strings (dotted keys allowed) into nested data; values are parsed as YAML."""
    data: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ForgeError(f"override {_shown(item)} is not key=value", "--set", "write e.g. --set iters=100")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(part.strip() for part in parts):
            raise ForgeError(f"override {_shown(item)} has an empty key name", "--set", "write e.g. --set iters=100")
        _set_nested(data, parts, _override_value(raw), item)
    return data


def _override_value(raw: str) -> Any:
    """The value of `key=value` as YAML would read it (`1e-5` and `[a, b]` too); left as text when not YAML."""
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def _set_nested(data: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    """data[a][b][c] = value for `a.b.c`; refuses to reach inside a value an earlier --set gave."""
    node = data
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            parent = ".".join(parts[: depth + 1])
            raise ForgeError(
                f"override {_shown(item)} sets a key inside {parent!r}, which an earlier --set gave the value "
                f"{_shown(node)}",
                "--set",
                f"keep one of the two --set options for {parent!r}",
            )
    node[parts[-1]] = value


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base` (nested mappings merge, other values replace)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (or the defaults when `path` is None) and apply `key=value` overrides."""
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    name = None
    if path is not None:
        path = Path(path)
        name = str(path)
        data, lines = _compose_with_lines(read_config_text(path), name)
    if overrides:
        extra = parse_overrides(overrides)
        data = merge(data, extra)
        for key in _flatten(extra):
            lines.pop(key, None)
    return from_dict(data, name, lines)


MAX_CONFIG_BYTES = 1 << 20  # the shipped configs are ~2 KB; a bigger file is a data file given by mistake
_CONFIG_FIX = "pass a YAML file such as configs/cpt-tiny.yaml"


def read_config_text(path: Path) -> str:
    """The text of a config file, or a ForgeError saying what the path is instead (a folder, a pipe,
    a link loop, a huge or binary file, text that is not UTF-8)."""
    _require_config_file(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ForgeError(f"cannot read the config file ({e.strerror or e})", str(path), "check its permissions") from e
    if b"\0" in raw:
        raise ForgeError(
            "the config file is binary, not YAML text", str(path), f"{_CONFIG_FIX} (an archive or model file?)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ForgeError(
            f"the config file is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line})",
            f"{path}:{line}",
            "re-save it as UTF-8 (most editors: Save with Encoding > UTF-8)",
        ) from e


def _require_config_file(path: Path) -> None:
    """A regular file of config size; otherwise say what was given (a run folder gets the resume hint)."""
    kind = path_kind(path)
    if kind == MISSING:
        raise ForgeError("config file not found", str(path), _CONFIG_FIX)
    if kind == FOLDER:
        fix = _CONFIG_FIX
        if (path / "config.yaml").is_file():  # runs.CONFIG_FILE: the folder is a run
            fix = f"this looks like a run folder: continue it with `python -m forgellm train --resume {path}`"
        raise ForgeError("the config path is a folder, not a YAML file", str(path), fix)
    if kind != FILE:
        raise ForgeError(f"the config path is {kind}, not a YAML file", str(path), _CONFIG_FIX)
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ForgeError(
            f"the config file is {size / 1e6:.1f} MB; a config is a small YAML file (a few KB)",
            str(path),
            f"{_CONFIG_FIX}; documents go in its data: key, not in the config",
        )


def _flatten(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys.extend(_flatten(value, prefix + key + "."))
    return keys


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain data for YAML/JSON (every default filled in)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def field_groups(cls: type = TrainConfig) -> dict[str, str]:
    """Dotted key → the form group its top-level field names (nested keys take their parent's); "other"
    for a field that names none, so a new key still gets a widget."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        group = f.metadata.get("group", "other")
        if dataclasses.is_dataclass(hints[f.name]):
            out.update({f"{f.name}.{k}": group for k in field_help(hints[f.name])})
        else:
            out[f.name] = group
    return out


def field_help(cls: type = TrainConfig) -> dict[str, str]:
    """Dotted key → help string for every field (used by the CLI and the UI)."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out[f.name] = f.metadata.get("help", "")
        if dataclasses.is_dataclass(hints[f.name]):
            out.update({f"{f.name}.{k}": v for k, v in field_help(hints[f.name]).items()})
    return out

"""Model cards: the README.md of a fused model or an exported adapter, built from its run folder alone.

A card has YAML front matter the Hugging Face Hub accepts (`base_model` only as a Hub id, with
`base_model_relation`; `license` from the base model or the user, never guessed; `library_name: mlx`,
`pipeline_tag`, `tags`) and a body that says what was trained and on what: method and base model,
every source file with its size and SHA-256 (`lineage.py`), the mixture, the resolved config, best and
final metrics with a loss chart (`loss.png`, drawn by `png.py`), the round-trip check of a fused
folder, and a usage snippet that runs as written.

Which README.md is replaced (`card_file.py`): only one that is absent, mlx-lm's placeholder, or a
ForgeLLM card nobody edited. A card the user wrote or edited is kept as it is.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import __version__, runs
from ..atomic import write_bytes, write_text
from ..errors import ForgeError
from ..models.registry import BUILTINS, HUB_ALIASES, local_folder, looks_like_hub_id
from . import png
from .card_file import CARD_FILE, KEPT_STATES, card_state, read_front_matter, read_text, sign
from .files import FUSE_RECORD as PROVENANCE_FILE
from .files import ROUNDTRIP_FILE
from .lineage import data_section, public_config, public_path
from .markdown import fmt, loss, table

CHART_FILE = "loss.png"
HUB_URL = "https://huggingface.co"
CPT_PROMPT = "The most important thing to know about this subject is"
IFT_PROMPT = "What is the most important thing to know about this subject?"
TRAIN_TYPES = {"cpt": "continued pre-training on raw text", "ift": "instruction fine-tuning on conversations"}
METHODS = {"lora": "LoRA", "dora": "DoRA", "full": "full fine-tuning"}
CHOSEN_LICENCE = "(chosen when publishing)"  # the Licence row of a card whose licence the user chose


# ---- what a run says -------------------------------------------------------------------------------


@dataclass
class RunFacts:
    """Everything a card reports, read from one checkpoint and the run folder around it."""

    checkpoint: Path
    run_dir: Path
    adapter_config: dict[str, Any]
    config: dict[str, Any]  # config.yaml as plain data ({} when missing)
    status: runs.RunStatus
    records: list[runs.MetricRecord]
    report: dict[str, Any] | None  # data_report.json
    trainer_state: dict[str, Any]
    chat_template: str | None  # the template the run stored (its base tokenizer had none)
    base_path: Path | None = field(default=None)  # the recorded local folder of the base model

    @property
    def base_name(self) -> str:
        return str(self.adapter_config.get("base_model") or self.adapter_config.get("model") or "?")

    @property
    def train_type(self) -> str | None:
        """cpt or ift: what the checkpoint records, else the run's config (None when neither says)."""
        return self.adapter_config.get("train_type") or self.config.get("train_type")

    @property
    def step(self) -> int | None:
        step = self.trainer_state.get("step")
        return int(step) if isinstance(step, (int, float)) else None


def gather(checkpoint: Path) -> RunFacts:
    """Read a checkpoint folder and its run folder (config, status, metrics, data report).

    Raises:
        ForgeError: when `checkpoint` is not a complete checkpoint.
    """
    checkpoint = Path(checkpoint).resolve()
    if not runs.is_complete_checkpoint(checkpoint):
        raise ForgeError("not a complete checkpoint", str(checkpoint), "pick a checkpoint of a run (best, latest)")
    run_dir = checkpoint.parent.parent
    adapter_config = runs.read_adapter_config(checkpoint)
    recorded = adapter_config.get("model")
    return RunFacts(
        checkpoint=checkpoint,
        run_dir=run_dir,
        adapter_config=adapter_config,
        config=_read_yaml(run_dir / runs.CONFIG_FILE),
        status=_status_or_empty(run_dir),
        records=runs.read_metrics(run_dir),
        report=_read_json(run_dir / runs.DATA_REPORT_FILE),
        trainer_state=_read_json(checkpoint / runs.TRAINER_STATE_FILE) or {},
        chat_template=runs.run_chat_template(checkpoint),
        base_path=Path(recorded) if recorded else None,
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _status_or_empty(run_dir: Path) -> runs.RunStatus:
    try:
        return runs.read_status(run_dir)
    except ForgeError:
        return runs.RunStatus()


# ---- front matter ----------------------------------------------------------------------------------


def hub_base_model(name: str | None, base_path: Path | None = None) -> str | None:
    """The Hub id of a base model, or None when it has none (built here, or a local folder).

    A built-in maps to its upstream repo (SmolLM2 builds → HuggingFaceTB/SmolLM2-135M-Instruct; the
    tiny models have none). Otherwise the id is trusted only when the model was loaded from the Hub
    cache (`.../models--org--name/snapshots/...`), or, with no recorded folder, when `name` is shaped
    `org/name` and names no local folder.
    """
    if not name:
        return None
    name = name.strip()
    if name in BUILTINS:
        return BUILTINS[name].hub_id
    if name in HUB_ALIASES:
        return name
    if base_path is not None:
        return _hub_cache_repo(base_path)
    return name if looks_like_hub_id(name) and local_folder(name) is None else None


def _hub_cache_repo(path: Path) -> str | None:
    """`org/name` for a folder inside the huggingface_hub cache, else None."""
    for part in Path(path).parts:
        if part.startswith("models--") and len(part) > len("models--"):
            return part[len("models--") :].replace("--", "/", 1)
    return None


def base_license(name: str | None, base_path: Path | None = None) -> tuple[dict[str, str], str] | None:
    """The base model's licence as front-matter keys, and where it was read; None when unknown.

    Read from the base folder's README.md front matter (`license`, plus `license_name` and
    `license_link` for `license: other`), else from the built-in registry.
    """
    if base_path is not None:
        meta = read_front_matter(read_text(Path(base_path) / CARD_FILE)) or {}
        if isinstance(meta.get("license"), str):
            keys = {k: str(meta[k]) for k in ("license", "license_name", "license_link") if meta.get(k)}
            return keys, "the base model's card (README.md)"
    spec = BUILTINS.get(HUB_ALIASES.get(name or "", name or ""))
    if spec is not None and spec.license:
        return {"license": spec.license}, str(spec.license_source)
    return None


def card_metadata(
    base_model: str | None,
    fine_tune_type: str,
    train_type: str,
    base_path: Path | None = None,
    adapter: bool = False,
    license: str | None = None,
) -> dict[str, Any]:
    """The YAML front matter of a card, as the Hub accepts it.

    Args:
        base_model: The base model as the run named it (built-in name, folder or Hub id).
        fine_tune_type: lora, dora or full.
        train_type: cpt or ift.
        base_path: The local folder the base was loaded from (its README.md gives the licence).
        adapter: True for an adapter-only folder (`base_model_relation: adapter`), else `finetune`.
        license: The licence the user chose (a Hub licence id); None takes the base model's, if known.

    Returns:
        `base_model` and `base_model_relation` (only for a Hub id), `license` (only when known),
        `library_name: mlx`, `pipeline_tag: text-generation` and `tags`.
    """
    meta: dict[str, Any] = {}
    hub_id = hub_base_model(base_model, base_path)
    if hub_id:
        meta["base_model"] = hub_id
        meta["base_model_relation"] = "adapter" if adapter else "finetune"
    if license:
        meta["license"] = license
    else:
        found = base_license(base_model, base_path)
        meta.update(found[0] if found else {})
    meta["library_name"] = "mlx"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["mlx", fine_tune_type, train_type, "forgellm"]
    return meta


# ---- the card --------------------------------------------------------------------------------------


def render_card(
    facts: RunFacts,
    model_ref: str,
    adapter: bool = False,
    base_ref: str | None = None,
    license: str | None = None,
    roundtrip: dict[str, Any] | None = None,
    chart: str | None = CHART_FILE,
    dequantized: bool = False,
) -> str:
    """The README.md text of a fused model (or, with `adapter`, of an exported adapter).

    Args:
        facts: The run and checkpoint the folder came from (`gather`).
        model_ref: What the usage snippet loads: a Hub repo id or a local folder path.
        adapter: The folder holds only the adapter; the snippet loads `base_ref` with it.
        base_ref: The base model the adapter snippet loads; default its Hub id, else its name.
        license: The licence the user chose; None takes the base model's (absent when unknown).
        roundtrip: A fused folder's `forgellm_roundtrip.json`; None renders "not checked".
        chart: The loss chart's file name beside the card, or None for no image.
        dequantized: The fused model was de-quantized (fuse --dequantize).

    Returns:
        Front matter, body and the ForgeLLM marker line.
    """
    meta = card_metadata(
        facts.base_name,
        facts.adapter_config.get("fine_tune_type", "lora"),
        facts.train_type or "cpt",
        base_path=facts.base_path,
        adapter=adapter,
        license=license,
    )
    hub_id = meta.get("base_model")
    if base_ref is None:
        base_ref = hub_id or _base_folder_name(facts.base_name)
    title = model_ref.rstrip("/").rsplit("/", 1)[-1]
    sections = [
        f"# {title}\n\n{_intro(facts, hub_id, adapter, dequantized)}",
        _usage(facts, model_ref, adapter, base_ref, hub_id),
        _training(facts, meta, hub_id),
        _results(facts, chart),
        None if adapter else _roundtrip_section(roundtrip),
        _gain_section(facts.run_dir),
        data_section(facts.report, facts.config),
        _config(facts),
        _footer(),
    ]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return sign(f"---\n{front}---\n\n" + "\n\n".join(s for s in sections if s))


def _gain_section(run_dir: Path) -> str | None:
    """The run's gain-and-forgetting table (`forgellm eval --gain`), when it was measured."""
    from ..gain import read_gain

    report = read_gain(run_dir)
    if report is None or not report.rows:
        return None
    headers, rows = report.table()
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    findings = "\n".join(f"- {line}" for line in report.findings())
    return "## Gain and forgetting\n\nPerplexity before and after training, in the domain and on general text:\n\n" + (
        "\n".join(lines) + "\n\n" + findings
    )


def _intro(facts: RunFacts, hub_id: str | None, adapter: bool, dequantized: bool) -> str:
    kind = facts.adapter_config.get("fine_tune_type", "")
    method = METHODS.get(kind, "a fine-tune")
    train = TRAIN_TYPES.get(facts.train_type, "training")
    if adapter:
        what = "This folder holds the trained weights only (mlx-lm adapter format): load them on top of the base model."
    else:
        merged = "replace the base weights" if kind == "full" else "are fused into the base weights"
        what = f"The trained weights {merged}: a standalone mlx-lm model" + (", de-quantized." if dequantized else ".")
    return (
        f"A fine-tune of {_base_link(facts, hub_id)}, made with ForgeLLM on "
        f"[MLX](https://github.com/ml-explore/mlx) / mlx-lm: {method}, {train}. {what}"
    )


def _base_link(facts: RunFacts, hub_id: str | None) -> str:
    if hub_id:
        return f"[{hub_id}]({HUB_URL}/{hub_id})"
    if facts.base_name in BUILTINS:
        return f"ForgeLLM's built-in `{facts.base_name}` model (built locally; not on the Hub)"
    return f"`{public_path(facts.base_name)}` (a local model folder)"


def _usage(facts: RunFacts, model_ref: str, adapter: bool, base_ref: str, hub_id: str | None) -> str:
    lines = ["from mlx_lm import generate, load", ""]
    q = json.dumps  # a JSON string is a valid Python string literal
    if adapter:
        local = _is_local_ref(model_ref)
        if not local:
            lines[0:0] = ["from huggingface_hub import snapshot_download"]
        lines.append(f"adapter = {q(model_ref)}" if local else f"adapter = snapshot_download({q(model_ref)})")
        base_note = "" if hub_id else _base_note(facts.base_name)
        lines.append(f"model, tokenizer = load({q(base_ref)}, adapter_path=adapter){base_note}")
    else:
        lines.append(f"model, tokenizer = load({q(model_ref)})")
    if facts.train_type == "ift":
        lines.append(f'messages = [{{"role": "user", "content": {q(IFT_PROMPT)}}}]')
        if adapter and facts.chat_template:  # the run's template: the base tokenizer has none
            lines[0:0] = ["from pathlib import Path"]
            lines.append('template = (Path(adapter) / "chat_template.jinja").read_text()')
            lines.append(
                "prompt = tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True)"
            )
        else:
            lines.append("prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)")
    else:
        lines.append(f"prompt = {q(CPT_PROMPT)}")
    lines += ["text = generate(model, tokenizer, prompt=prompt, max_tokens=100)", "print(text)"]
    return "## Usage\n\n```python\n" + "\n".join(lines) + "\n```"


def _base_folder_name(name: str) -> str:
    """Where the adapter snippet finds a base that is not on the Hub: models/<built-in>, or the folder's name."""
    return f"models/{name}" if name in BUILTINS else Path(name).name


def _base_note(name: str) -> str:
    if name in BUILTINS:
        command = "python -m forgellm tiny" + ("" if name == "tiny" else " --all")
        return f"  # ForgeLLM's built-in model: `{command}` builds it in models/{name}"
    return "  # the base model's local folder (it is not on the Hub)"


def _is_local_ref(ref: str) -> bool:
    return not looks_like_hub_id(ref) or Path(ref).exists()


def _training(facts: RunFacts, meta: dict[str, Any], hub_id: str | None) -> str:
    ac, cfg = facts.adapter_config, facts.config
    rows = [
        ("Base model", _base_link(facts, hub_id) + _quantized_note(facts)),
        ("Training", TRAIN_TYPES.get(facts.train_type, "?") + _ift_note(facts)),
        ("Method", _method(ac)),
        ("Checkpoint", _checkpoint_label(facts)),
        ("Optimizer", _optimizer(cfg)),
        ("Batch", _batch(cfg)),
        ("Seed", fmt(cfg.get("seed"))),
        ("Licence", _licence_note(meta, facts)),
    ]
    return "## Training\n\n" + table(rows)


def _quantized_note(facts: RunFacts) -> str:
    spec = BUILTINS.get(facts.base_name)
    config = _read_json(facts.base_path / "config.json") if facts.base_path else None
    if (spec and spec.quantized) or (config and config.get("quantization")):
        return "; quantized base weights (QLoRA)"
    return ""


def _ift_note(facts: RunFacts) -> str:
    ift = (facts.report or {}).get("ift") or {}
    if not ift:
        return ""
    source = {"tokenizer": "the tokenizer's own", "default": "ForgeLLM's default (stored with the model)"}
    template = source.get(ift.get("chat_template_source"), "?")
    return f"; chat template: {template}; loss on assistant tokens only: {'yes' if ift.get('mask_prompt') else 'no'}"


def _method(ac: dict[str, Any]) -> str:
    kind = ac.get("fine_tune_type", "?")
    layers = ac.get("num_layers", -1)
    where = "all transformer blocks" if layers == -1 else f"the last {layers} transformer blocks"
    if kind == "full":
        return "full fine-tuning of " + ("every weight (embeddings included)" if layers == -1 else where)
    lora = ac.get("lora_parameters") or {}
    keys = ", ".join(f"`{k}`" for k in lora.get("keys") or []) or "every linear layer"
    return (
        f"{METHODS.get(kind, kind)}: rank {lora.get('rank')}, scale {lora.get('scale')}, "
        f"dropout {lora.get('dropout')}, on {keys} of {where}"
    )


def _checkpoint_label(facts: RunFacts) -> str:
    step, status = facts.step, facts.status
    notes = []
    if step is not None and step == status.best_step:
        notes.append("the best validation loss")
    if step is not None and step == status.step:
        notes.append("the last step")
    total = status.total_steps or facts.trainer_state.get("total_steps")
    state = status.state.replace("_", " ")
    reason = f" ({status.stop_reason})" if status.stop_reason else ""
    label = f"step {fmt(step)}" + (f" ({', '.join(notes)})" if notes else "")
    return f"{label}; the run {state}{reason} at step {status.step} of {fmt(total)}"


def _optimizer(cfg: dict[str, Any]) -> str:
    if not cfg:
        return "not recorded"
    parts = [
        f"{cfg.get('optimizer')}, learning rate {fmt(cfg.get('learning_rate'))}",
        f"{cfg.get('lr_schedule')} schedule to {fmt(cfg.get('min_learning_rate'))}",
        f"warmup {cfg.get('warmup_steps')} steps",
        f"weight decay {fmt(cfg.get('weight_decay'))}",
        f"gradient clipping {fmt(cfg.get('max_grad_norm'))}",
    ]
    return ", ".join(parts)


def _batch(cfg: dict[str, Any]) -> str:
    if not cfg:
        return "not recorded"
    accum = cfg.get("grad_accumulation_steps") or 1
    return (
        f"{cfg.get('batch_size')} sequences x {accum} accumulation step(s) of up to {cfg.get('max_seq_length')} tokens"
    )


def _licence_note(meta: dict[str, Any], facts: RunFacts) -> str:
    if "license" not in meta:
        return "not stated: the base model's licence is unknown to ForgeLLM (choose one when publishing)"
    found = base_license(facts.base_name, facts.base_path)
    if found and found[0].get("license") == meta["license"]:
        return f"`{meta['license']}`, from {found[1]}"
    return f"`{meta['license']}` {CHOSEN_LICENCE}"


def _results(facts: RunFacts, chart: str | None) -> str:
    train = _series(facts.records, "train")
    val = _series(facts.records, "val")
    best = _best(facts, val)
    ppl = {r.step: r.ppl for r in facts.records if r.split == "val" and getattr(r, "ppl", None) is not None}
    rows = []
    if val and val[0][0] == 0:
        rows.append(("Validation loss before training", f"{loss(val[0][1])} (perplexity {_ppl(ppl, *val[0])})"))
    if best:
        rows.append(("Best validation loss", f"{loss(best[1])} (perplexity {_ppl(ppl, *best)}) at step {best[0]}"))
    if val:
        rows.append(
            ("Final validation loss", f"{loss(val[-1][1])} (perplexity {_ppl(ppl, *val[-1])}) at step {val[-1][0]}")
        )
    if train:
        rows.append(
            ("Final training loss", f"{loss(train[-1][1])} at step {train[-1][0]} (mean since the previous report)")
        )
    rows += _volume(facts)
    if not rows:
        return "## Results\n\nNo metrics were recorded."
    text = "## Results\n\nLoss is the mean cross-entropy per trained token (nats).\n\n" + table(rows)
    if chart:
        text += (
            f"\n\n![Loss against step: training loss as a blue line, validation loss as orange dots]({chart})\n\n"
            "Loss (vertical axis) against optimizer step (horizontal axis): training loss as the blue line, "
            "validation loss as the orange dots."
        )
    return text


def _volume(facts: RunFacts) -> list[tuple[str, str]]:
    last = next((r for r in reversed(facts.records) if r.split == "train"), None)
    rows = [("Steps", f"{facts.status.step} of {fmt(facts.status.total_steps)}")]
    tokens = getattr(last, "trained_tokens", None)
    if tokens is not None:
        rows.append(
            (
                "Trained tokens",
                f"{tokens:,} (whole run); {fmt(facts.trainer_state.get('trained_tokens'))} up to this checkpoint",
            )
        )
    elapsed = max((r.elapsed_s for r in facts.records), default=0.0)
    if elapsed:
        rows.append(("Training time", f"{elapsed:,.0f} s"))
    return rows


def _series(records: Sequence[runs.MetricRecord], split: str) -> list[tuple[int, float]]:
    """(step, loss) of one split, by step; a later record for a step (after a resume) replaces an earlier."""
    by_step = {int(r.step): float(r.loss) for r in records if r.split == split and isinstance(r.loss, (int, float))}
    return sorted(by_step.items())


def _best(facts: RunFacts, val: list[tuple[int, float]]) -> tuple[int, float] | None:
    """The trainer's best (what `checkpoints/best` points at), else the lowest validation after step 0."""
    status = facts.status
    if status.best_step is not None and isinstance(status.best_val_loss, (int, float)):
        return status.best_step, float(status.best_val_loss)
    finite = [p for p in val if p[0] > 0 and math.isfinite(p[1])]
    return min(finite, key=lambda p: p[1]) if finite else None


def _ppl(recorded: dict[int, float | None], step: int, loss_value: float) -> str:
    value = recorded.get(step)
    if value is None:
        value = math.exp(loss_value) if math.isfinite(loss_value) and loss_value < 700 else float("inf")
    return fmt(value, 2)


def chart_png(records: Sequence[runs.MetricRecord]) -> bytes:
    """The card's loss chart (train line, validation dots) as PNG bytes."""
    return png.loss_chart(_series(records, "train"), _series(records, "val"))


def _roundtrip_section(roundtrip: dict[str, Any] | None) -> str:
    return (
        "## Round-trip check\n\n"
        "The fused folder, reloaded as a user loads it, compared with the base model plus the adapter on fixed "
        f"prompts (tokenized prompt, last-position logits, first greedy tokens): {roundtrip_summary(roundtrip)}."
    )


def roundtrip_summary(roundtrip: dict[str, Any] | None) -> str:
    """One line: `identical on N prompts`, the first difference, or `not checked`."""
    if roundtrip is None:
        return "not checked"
    identical = roundtrip.get("identical")
    prompts = [p for p in roundtrip.get("prompts") or [] if isinstance(p, dict)]
    if identical is True:
        tokens = roundtrip.get("max_tokens")
        worst = max((p.get("max_logit_diff") or 0.0 for p in prompts), default=None)
        detail = f" ({tokens} greedy tokens each" if tokens else ""
        detail += (f", max logit difference {worst:.2g})" if worst is not None else ")") if detail else ""
        return f"identical on {len(prompts)} prompts{detail}"
    if identical is False:
        differing = [p for p in prompts if p.get("identical") is False]
        first = differing[0].get("first_difference") if differing else None
        return f"**differs** on {len(differing)} of {len(prompts)} prompts; first: {first or 'no detail recorded'}"
    return "not checked (the stored result is unreadable)"


def _config(facts: RunFacts) -> str:
    if not facts.config:
        return ""
    text = yaml.safe_dump(public_config(facts.config), sort_keys=False, allow_unicode=True)
    intro = "The resolved training config (every default filled in; local paths shortened)."
    return f"## Configuration\n\n{intro}\n\n```yaml\n{text}```"


def _footer() -> str:
    try:
        mlx_lm = importlib.metadata.version("mlx-lm")
    except importlib.metadata.PackageNotFoundError:
        mlx_lm = "?"
    return f"---\n\nCard written by ForgeLLM {__version__} (mlx-lm {mlx_lm})."


# ---- writing ---------------------------------------------------------------------------------------


def write_card(model_dir: Path, license: str | None = None, repo_id: str | None = None) -> Path:
    """Write README.md and loss.png into a folder ForgeLLM fused, from the run it was fused from.

    A README.md the user wrote or edited is kept as it is (see the module docstring); then nothing
    is written. Both files are written atomically.

    Args:
        model_dir: A fused model folder (holds forgellm_fuse.json).
        license: A Hub licence id the user chose; None takes the base model's, when known.
        repo_id: The Hub repo the folder goes to (the usage snippet loads it); None names the folder.

    Returns:
        The path of README.md.

    Raises:
        ForgeError: when the folder was not fused by ForgeLLM, or its checkpoint is gone.
    """
    model_dir = Path(model_dir)
    readme = model_dir / CARD_FILE
    if card_state(readme) in KEPT_STATES:
        return readme
    provenance = _read_json(model_dir / PROVENANCE_FILE)
    if provenance is None or not provenance.get("checkpoint"):
        raise ForgeError(
            f"no {PROVENANCE_FILE} here, so ForgeLLM does not know which run this model came from",
            str(model_dir),
            "fuse a run into a new folder (`python -m forgellm fuse`), or write README.md yourself (it is kept)",
        )
    checkpoint = Path(provenance["checkpoint"])
    if not runs.is_complete_checkpoint(checkpoint):
        raise ForgeError(
            "the checkpoint this model was fused from is gone, and the card is built from its run folder",
            str(checkpoint),
            "restore the run folder, or write README.md yourself (ForgeLLM keeps a card you wrote)",
        )
    facts = gather(checkpoint)
    text = render_card(
        facts,
        model_ref=repo_id or model_dir.resolve().name,
        license=license,
        roundtrip=_read_json(model_dir / ROUNDTRIP_FILE),
        dequantized=bool(provenance.get("dequantize")),
    )
    write_bytes(model_dir / CHART_FILE, chart_png(facts.records))
    write_text(readme, text)
    return readme


def ensure_card(model_dir: Path, repo_id: str | None = None) -> bool:
    """Write a fused folder's card when ForgeLLM may and should; True when it wrote one.

    It writes when README.md is absent or mlx-lm's placeholder, and rewrites its own unedited card when
    `repo_id` is given and the card's usage snippet loads something else (a card first written for the
    local folder would tell Hub users to load a folder they do not have). The licence on the card is kept.
    """
    readme = Path(model_dir) / CARD_FILE
    state = card_state(readme)
    text = read_text(readme) or ""
    names_other_repo = state == "generated" and repo_id is not None and json.dumps(repo_id) not in text
    if state not in ("absent", "placeholder") and not names_other_repo:
        return False
    chosen = (read_front_matter(text) or {}).get("license") if CHOSEN_LICENCE in text else None
    write_card(model_dir, license=chosen if isinstance(chosen, str) else None, repo_id=repo_id)
    return True

"""Export a run's adapter as a small folder to publish: weights, a clean config, template, card, chart.

The folder is what `mlx_lm.load(base, adapter_path=folder)` reads, and nothing of the machine it was
made on: adapter_config.json names the base model by its Hub id (or its plain name when it has none)
instead of a local folder, and the provenance file records the run's name and step, not its path. It
is written atomically, and re-exporting replaces only a folder an earlier export made (it holds
`forgellm_adapter.json`); a README.md the user edited there is carried over into the new folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .. import runs
from ..atomic import atomic_folder, require_replaceable
from ..paths import models_dir
from .card import CHART_FILE, RunFacts, chart_png, gather, hub_base_model, render_card
from .card_file import CARD_FILE, KEPT_STATES, card_state
from .files import ADAPTER_RECORD
from .lineage import sha256_file

PROVENANCE_FILE = ADAPTER_RECORD  # marks a folder an adapter export wrote (and so may replace)
# What mlx-lm's load_adapters reads, plus the base model and the train type; `model` is rewritten.
_CONFIG_KEYS = ("fine_tune_type", "num_layers", "lora_parameters", "train_type")


def default_adapter_dir(run_dir: Path) -> Path:
    """models/<run-name>-adapter under ForgeLLM's home."""
    return models_dir() / f"{Path(run_dir).name}-adapter"


def export_adapter(
    run_dir: Path,
    checkpoint: str = "best",
    out: Path | None = None,
    license: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write checkpoint `checkpoint` (best, latest or a step) of a run as a publishable adapter folder.

    Args:
        run_dir: A run folder (or one of its checkpoint folders).
        checkpoint: Which checkpoint of the run: best, latest or a step number.
        out: The folder to write; default models/<run-name>-adapter.
        license: A Hub licence id for the card; None takes the base model's, when known.
        repo_id: The Hub repo the folder goes to (the card's usage snippet names it).

    Returns:
        The folder written.

    Raises:
        ForgeError: when the run has no such checkpoint, or `out` exists and an export did not write it.
    """
    ckpt = runs.adapter_dir(Path(run_dir), checkpoint).resolve()
    facts = gather(ckpt)
    out = Path(out).resolve() if out is not None else default_adapter_dir(facts.run_dir)
    require_replaceable(out, PROVENANCE_FILE, "choose a new output folder (an earlier adapter export may be reused)")
    kept_card = _users_card(out)
    with atomic_folder(out, replace_marker=PROVENANCE_FILE) as tmp:
        shutil.copyfile(ckpt / runs.ADAPTER_FILE, tmp / runs.ADAPTER_FILE)
        (tmp / runs.ADAPTER_CONFIG_FILE).write_text(json.dumps(public_adapter_config(facts), indent=2) + "\n")
        if facts.chat_template:
            (tmp / runs.CHAT_TEMPLATE_FILE).write_text(facts.chat_template, encoding="utf-8")
        (tmp / CHART_FILE).write_bytes(chart_png(facts.records))
        card = kept_card or render_card(facts, model_ref=repo_id or out.name, adapter=True, license=license)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        (tmp / PROVENANCE_FILE).write_text(json.dumps(_provenance(facts, tmp / runs.ADAPTER_FILE), indent=2) + "\n")
    return out


def public_adapter_config(facts: RunFacts) -> dict[str, Any]:
    """The checkpoint's adapter_config.json with the base model as a Hub id (else its plain name), no paths."""
    config = {k: facts.adapter_config[k] for k in _CONFIG_KEYS if k in facts.adapter_config}
    base = hub_base_model(facts.base_name, facts.base_path) or Path(facts.base_name).name
    return {**config, "model": base, "base_model": base}


def _provenance(facts: RunFacts, weights: Path) -> dict[str, Any]:
    return {
        "run": facts.run_dir.name,
        "step": facts.step,
        "adapter_sha256": sha256_file(weights),
        "trainer_state": {k: v for k, v in facts.trainer_state.items() if k != "rng_state"},
    }


def _users_card(folder: Path) -> str | None:
    """The README.md of an earlier export when the user wrote or edited it (it survives re-export)."""
    readme = folder / CARD_FILE
    return readme.read_text(encoding="utf-8") if card_state(readme) in KEPT_STATES else None

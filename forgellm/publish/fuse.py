"""Fuse a run's LoRA/DoRA checkpoint into the base weights and save a standalone mlx-lm model folder.

The fused folder is written atomically (complete or absent), records which run and checkpoint it came
from, and fusing the same checkpoint into the same folder again is a no-op.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import runs
from ..atomic import atomic_folder
from ..errors import ForgeError
from ..models.registry import resolve_model

PROVENANCE_FILE = "forgellm_fuse.json"


def base_model_of(checkpoint: Path) -> Path:
    """The base model a checkpoint was trained on: its recorded folder, else its recorded name."""
    config = json.loads((checkpoint / runs.ADAPTER_CONFIG_FILE).read_text())
    recorded = Path(config.get("model", ""))
    if recorded.is_dir():
        return recorded
    if config.get("base_model"):
        return resolve_model(config["base_model"])
    raise ForgeError("the checkpoint does not say which base model it belongs to", str(checkpoint), "retrain or fuse with mlx_lm fuse --model")


def fuse_run(run_or_checkpoint: Path, out: Path, checkpoint: str = "best", dequantize: bool = False) -> Path:
    """Fuse `checkpoint` (best, latest or a step) of a run into `out`; returns `out`."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, save

    ckpt = runs.adapter_dir(Path(run_or_checkpoint), checkpoint).resolve()
    out = Path(out).resolve()
    provenance = {"checkpoint": str(ckpt), "trainer_state": _read_state(ckpt), "dequantize": dequantize}
    if _already_fused(out, provenance):
        return out
    base = base_model_of(ckpt)
    model, tokenizer, config = load(str(base), adapter_path=str(ckpt), return_config=True)
    fused = [(name, module.fuse(dequantize=dequantize)) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    template = runs.run_chat_template(ckpt)
    if template:
        tokenizer._tokenizer.chat_template = template
    with atomic_folder(out) as tmp:
        save(tmp, str(base), model, tokenizer, config, donate_model=False)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
    return out


def _read_state(ckpt: Path) -> dict:
    path = ckpt / runs.TRAINER_STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _already_fused(out: Path, provenance: dict) -> bool:
    path = out / PROVENANCE_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()) == provenance
    except json.JSONDecodeError:
        return False

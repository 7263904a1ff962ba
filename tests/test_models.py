"""Built-in model resolution: the tiny model builds deterministically and loads in mlx-lm; bad names
and offline Hub ids give errors that say what to do."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from forgellm.errors import ForgeError
from forgellm.models import registry
from forgellm.models.tiny import TinySpec, build_tiny


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_model_loads_in_mlx_lm_and_chats(tiny_model: Path) -> None:
    from mlx_lm.utils import load

    model, tokenizer = load(str(tiny_model))
    text = "The queen lays eggs in the brood nest."
    assert tokenizer.decode(tokenizer.encode(text)) == text  # byte-level BPE round-trips
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert model.args.vocab_size == len(tokenizer.vocab)
    assert (tiny_model / "README.md").is_file()


def test_tiny_build_is_deterministic(tmp_path: Path, tiny_model: Path) -> None:
    again = build_tiny(tmp_path / "tiny", TinySpec())
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(again / name) == digest(tiny_model / name), name


def test_build_is_idempotent_and_atomic(tmp_path: Path) -> None:
    out = tmp_path / "m"
    build_tiny(out, TinySpec(num_hidden_layers=1, hidden_size=64, intermediate_size=128, vocab_size=512))
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    build_tiny(out)  # complete folder: returned as is
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(ForgeError) as info:
        registry.resolve_model("no-such-model")
    assert "tiny" in info.value.message and "Hub id" in info.value.message


def test_offline_hub_id_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ForgeError) as info:
        registry.resolve_model("some-org/some-model-that-is-not-cached")
    assert "offline" in info.value.message and "tiny" in info.value.message


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ForgeError) as info:
        registry.resolve_model(str(tmp_path))
    assert "config.json" in info.value.message


def test_a_users_folder_in_place_of_a_builtin_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tiny --force` and a first-use build leave alone a models/tiny that ForgeLLM did not build."""
    from helpers import run_cli

    home = tmp_path / "home"
    mine = home / "models" / "tiny"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own files")
    proc = run_cli("tiny", "--force", check=False, env={"FORGELLM_HOME": str(home)})
    assert proc.returncode == 2 and "not written by ForgeLLM" in proc.stderr
    monkeypatch.setenv("FORGELLM_HOME", str(home))
    with pytest.raises(ForgeError, match="not written by ForgeLLM"):
        registry.ensure_builtin("tiny")  # no config.json, so it would be built: refused instead
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "my own files"


def test_tiny_force_rebuilds_a_folder_forgellm_built(tmp_path: Path) -> None:
    from helpers import run_cli

    home = tmp_path / "home"
    first = run_cli("tiny", env={"FORGELLM_HOME": str(home)}).stdout.strip()
    stamp = (Path(first) / "model.safetensors").stat().st_mtime_ns
    again = run_cli("tiny", "--force", env={"FORGELLM_HOME": str(home)}).stdout.strip()
    assert again == first and (Path(again) / "model.safetensors").stat().st_mtime_ns != stamp
    assert (Path(again) / "forgellm_tiny.json").is_file()

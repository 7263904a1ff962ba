"""The round-trip check after a fuse: a fused folder reloaded as a user would must answer like base +
adapter, and a lost chat template or a damaged weight must be caught and described."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import pytest
from helpers import run_cli

from forgellm import runs
from forgellm.publish import roundtrip
from forgellm.publish.fuse import fuse_run

SHORT = ["max_seq_length=64", "batch_size=4", "steps_per_eval=6", "save_every=6", "iters=6", "learning_rate=5e-3"]


def train(out: Path, config: str, name: str, *extra: str) -> Path:
    args = ["train", f"configs/{config}"]
    for item in [*SHORT, f"output_dir={out}", f"run_name={name}", *extra]:
        args += ["--set", item]
    return Path(run_cli(*args).stdout.splitlines()[0])


@pytest.fixture(scope="module")
def fused_runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A CPT LoRA run and an IFT LoRA run (its chat template stored with the run), each fused."""
    out = tmp_path_factory.mktemp("roundtrip")
    made = {}
    for name, config, extra in [
        ("cpt", "cpt-tiny.yaml", ["fine_tune_type=lora"]),
        ("ift", "ift-tiny.yaml", ["max_seq_length=160", "val_batches=1"]),
    ]:
        run_dir = train(out, config, name, *extra)
        made[name] = (run_dir, fuse_run(run_dir, out / f"{name}-fused"))
    return made


@pytest.mark.parametrize("kind", ["cpt", "ift"])
def test_every_fuse_stores_an_identical_round_trip(fused_runs, kind: str) -> None:
    run_dir, fused = fused_runs[kind]
    stored = roundtrip.read_roundtrip(fused)
    assert stored is not None and stored.identical, stored
    assert stored.chat_format == (kind == "ift")
    assert len(stored.prompts) == len(roundtrip.PROMPTS)
    for result in stored.prompts:
        assert len(result.fused_tokens) == roundtrip.MAX_TOKENS and result.fused_tokens == result.reference_tokens
        assert result.max_logit_diff < 1e-3, result
    assert stored.summary().startswith(f"identical: {len(roundtrip.PROMPTS)} of {len(roundtrip.PROMPTS)} prompts")


def test_the_check_would_notice_an_adapter_that_did_nothing(fused_runs) -> None:
    """The reference answers differ from the plain base's, so a fuse that dropped the adapter would fail."""
    from mlx_lm.utils import load

    run_dir, fused = fused_runs["cpt"]
    stored = roundtrip.read_roundtrip(fused)
    base, tokenizer = load(str(runs.base_model_of(runs.resolve_checkpoint(run_dir, "best"))))
    base_answers = [roundtrip._greedy(base, roundtrip._encode(tokenizer, p)) for p in roundtrip.PROMPTS]
    assert any(b != r.reference_tokens for b, r in zip(base_answers, stored.prompts, strict=True))


def test_a_lost_chat_template_is_caught(fused_runs, tmp_path: Path) -> None:
    run_dir, fused = fused_runs["ift"]
    damaged = tmp_path / "no-template"
    shutil.copytree(fused, damaged)
    config_path = damaged / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    (damaged / "chat_template.jinja").unlink(missing_ok=True)

    result = roundtrip.check_roundtrip(damaged, runs.resolve_checkpoint(run_dir, "best"))
    assert not result.identical
    assert "tokenized differently" in result.prompts[0].first_difference
    assert roundtrip.read_roundtrip(damaged) == result  # stored where the push will look
    assert result.summary().startswith(f"differs on {len(roundtrip.PROMPTS)} of {len(roundtrip.PROMPTS)} prompts")


def test_a_damaged_weight_is_caught_with_the_first_differing_token(fused_runs, tmp_path: Path) -> None:
    run_dir, fused = fused_runs["cpt"]
    damaged = tmp_path / "damaged"
    shutil.copytree(fused, damaged)
    weights_path = next(damaged.glob("*.safetensors"))
    weights = mx.load(str(weights_path))
    key = next(k for k in weights if k.endswith("layers.3.mlp.down_proj.weight"))
    weights[key] = weights[key] * -4.0
    mx.save_safetensors(str(weights_path), weights, metadata={"format": "mlx"})

    result = roundtrip.check_roundtrip(damaged, runs.resolve_checkpoint(run_dir, "best"))
    assert not result.identical
    differing = [p for p in result.prompts if not p.identical]
    assert differing and differing[0].first_difference.startswith("generated token"), differing
    assert all(p.max_logit_diff > 1e-2 for p in result.prompts)

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


def test_fusing_again_checks_a_folder_an_older_forgellm_fused_without_a_check(fused_runs, tmp_path: Path) -> None:
    """Regression: a fused folder without forgellm_roundtrip.json (written before the check existed) was
    taken as already fused, so fusing again was a no-op and the push stayed refused. Fusing again, also
    through the run's `checkpoints/best` link, now runs and stores the check."""
    run_dir, fused = fused_runs["ift"]
    older = tmp_path / "older-fuse"
    shutil.copytree(fused, older)
    (older / roundtrip.ROUNDTRIP_FILE).unlink()
    best_link = runs.best_link(run_dir)
    assert best_link.is_symlink()
    assert fuse_run(best_link, older) == older.resolve()
    stored = roundtrip.read_roundtrip(older)
    assert stored is not None and stored.identical and stored.chat_format  # an IFT run: checked through its template
    provenance = json.loads((older / "forgellm_fuse.json").read_text())
    assert provenance["checkpoint"] == str(best_link.resolve())  # the step the link named, not the link
    before = (older / roundtrip.ROUNDTRIP_FILE).stat().st_mtime_ns
    fuse_run(run_dir, older)  # the same checkpoint ("best" of the run), now checked: a no-op
    assert (older / roundtrip.ROUNDTRIP_FILE).stat().st_mtime_ns == before

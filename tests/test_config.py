"""The config tree: shipped configs load, mistakes are all reported at once with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgellm import config
from forgellm.errors import ConfigError, ForgeError

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_documents_itself(path: Path) -> None:
    cfg = config.load(path)
    text = path.read_text()
    assert text.startswith("#") and "python -m forgellm train" in text.split("\n\n")[0]
    for line in text.splitlines():
        if line and not line.startswith("#") and not line.strip().startswith("#"):
            assert "#" in line, f"{path.name}: key without a comment: {line!r}"
    assert (Path(__file__).resolve().parent.parent / cfg.data).exists(), f"{path.name}: data path missing"


def test_shipped_configs_include_the_defaults() -> None:
    names = {p.name for p in CONFIGS}
    assert {"cpt-tiny.yaml", "ift-tiny.yaml"} <= names


def test_all_problems_reported_at_once_with_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: tiny\n"
        "bach_size: 4\n"  # line 2: typo
        "iters: many\n"  # line 3: wrong type
        "lora_parameters:\n"
        "  rank: 8\n"
        "  alpha: 16\n"  # line 6: other tools' name
        "train_type: sft\n"  # line 7: not allowed
    )
    with pytest.raises(ConfigError) as info:
        config.load(bad)
    problems = info.value.problems
    assert len(problems) == 4
    text = "\n".join(problems)
    assert f"{bad}:2" in text and "did you mean 'batch_size'" in text
    assert f"{bad}:3" in text and "expected int" in text
    assert f"{bad}:6" in text and "'scale'" in text
    assert f"{bad}:7" in text and "'cpt', 'ift'" in text


def test_types_are_coerced() -> None:
    cfg = config.from_dict({"learning_rate": "1e-5", "iters": "20", "mask_prompt": "false", "max_grad_norm": "null"})
    assert cfg.learning_rate == pytest.approx(1e-5)
    assert cfg.iters == 20 and cfg.mask_prompt is False and cfg.max_grad_norm is None


def test_value_ranges_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        config.from_dict({"batch_size": 0, "val_fraction": 1.5, "mixture": {"ratio": 0}})
    assert len(info.value.problems) == 3


def test_overrides_apply_on_top_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("iters: 10\nlora_parameters:\n  rank: 4\n")
    cfg = config.load(path, ["iters=30", "lora_parameters.scale=10", "lora_parameters.keys=[self_attn.q_proj]"])
    assert cfg.iters == 30
    assert cfg.lora_parameters.rank == 4 and cfg.lora_parameters.scale == 10.0
    assert cfg.lora_parameters.keys == ["self_attn.q_proj"]


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = config.from_dict({"iters": 7, "early_stopping": {"patience": 2}})
    path = tmp_path / "resolved.yaml"
    path.write_text(config.dump_yaml(cfg))
    assert config.load(path) == cfg


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: tiny\niters: [1, 2\n")
    with pytest.raises(ForgeError) as info:
        config.load(path)
    assert str(path) in info.value.message and "YAML" in info.value.message


def test_every_field_has_help() -> None:
    helps = config.field_help()
    assert all(helps.values()), [k for k, v in helps.items() if not v]
    assert "lora_parameters.rank" in helps


def test_data_is_one_path_or_a_list_of_them():
    from_dict = config.from_dict
    assert from_dict({"data": "dataset/beekeeping"}).data == "dataset/beekeeping"
    assert from_dict({"data": ["a.txt", "docs"]}).data == ["a.txt", "docs"]
    for bad in (None, [], ["ok", ""], {"path": "x"}):
        with pytest.raises(ConfigError, match="data"):
            from_dict({"data": bad})

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
    by_place = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in problems}  # "file:line (key)" -> message
    assert set(by_place) == {
        f"{bad}:2 (bach_size)",
        f"{bad}:3 (iters)",
        f"{bad}:6 (lora_parameters.alpha)",
        f"{bad}:7 (train_type)",
    }
    assert "did you mean 'batch_size'" in by_place[f"{bad}:2 (bach_size)"]
    assert by_place[f"{bad}:3 (iters)"] == "expected int, got 'many'"
    assert "'scale'" in by_place[f"{bad}:6 (lora_parameters.alpha)"]
    assert "'cpt', 'ift'" in by_place[f"{bad}:7 (train_type)"]


def test_types_are_coerced() -> None:
    cfg = config.from_dict({"learning_rate": "1e-5", "iters": "20", "mask_prompt": "false", "max_grad_norm": "null"})
    assert cfg.learning_rate == pytest.approx(1e-5)
    assert cfg.iters == 20 and cfg.mask_prompt is False and cfg.max_grad_norm is None


def test_value_ranges_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        config.from_dict({"batch_size": 0, "val_fraction": 1.5, "mixture": {"ratio": 0}})
    assert sorted(info.value.problems) == [
        "batch_size: must be >= 1, got 0",
        "mixture.ratio: must be in (0, 1], got 0.0",
        "val_fraction: must be between 0 and 1 (exclusive), got 1.5",
    ]


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
    path.write_text("model: tiny\niters: 10\nseed: @x\nbatch_size: 2\n")  # line 3 cannot be parsed
    with pytest.raises(ForgeError) as info:
        config.load(path)
    assert info.value.where == f"{path}:3"
    assert info.value.what == "not valid YAML (found character '@' that cannot start any token)"
    assert info.value.fix == "fix the YAML syntax"


def test_an_unclosed_bracket_names_the_line_it_opened_on(tmp_path: Path) -> None:
    path = tmp_path / "unclosed.yaml"
    path.write_text("model: tiny\ndata: [dataset/a, dataset/b\niters: 10\n")  # "[" on line 2, noticed on 3
    with pytest.raises(ForgeError) as info:
        config.load(path)
    assert info.value.where == f"{path}:3"
    assert "flow sequence that starts on line 2" in info.value.what, info.value.what


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

"""Quantizing a fused model: a real mlx-lm quantized folder, and its perplexity cost measured on the
run's validation split, whose "before" figure equals the trainer's own validation loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import run_cli

from forgellm import runs
from forgellm.errors import ForgeError
from forgellm.publish.fuse import fuse_run
from forgellm.publish.quantize import QUANTIZE_FILE, quantize_fused, read_quantize_report

RUN = ["max_seq_length=64", "batch_size=4", "iters=8", "steps_per_eval=4", "learning_rate=5e-3", "fine_tune_type=lora"]


@pytest.fixture(scope="module")
def fused(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("quantize")
    args = ["train", "configs/cpt-tiny.yaml", "--set", f"output_dir={out}", "--set", "run_name=run"]
    for item in RUN:
        args += ["--set", item]
    run_dir = Path(run_cli(*args).stdout.splitlines()[0])
    return run_dir, fuse_run(run_dir, out / "fused")


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_copy_reports_its_perplexity_cost(fused: tuple[Path, Path], tmp_path: Path, bits: int) -> None:
    from mlx_lm.utils import load

    run_dir, fused_dir = fused
    report = quantize_fused(fused_dir, tmp_path / f"q{bits}", bits=bits, group_size=64)
    # "before" is the fused best checkpoint on the run's validation split: the trainer logged the same loss.
    best_val = runs.read_status(run_dir).best_val_loss
    assert report.perplexity_before == pytest.approx(math.exp(best_val), rel=1e-4)
    assert report.val_tokens > 0 and report.perplexity_after != report.perplexity_before
    assert abs(report.change) < (0.02 if bits == 8 else 0.5), report  # 8-bit costs little; 4-bit more
    config = json.loads((tmp_path / f"q{bits}" / "config.json").read_text())
    assert config["quantization"]["bits"] == bits and config["quantization"]["group_size"] == 64
    model, _ = load(str(tmp_path / f"q{bits}"))  # a user's mlx-lm loads it
    assert read_quantize_report(tmp_path / f"q{bits}") == report
    assert f"{bits}-bit, group 64" in report.summary()


def test_8_bit_costs_less_than_4_bit(fused: tuple[Path, Path], tmp_path: Path) -> None:
    _, fused_dir = fused
    eight = quantize_fused(fused_dir, tmp_path / "q8", bits=8)
    four = quantize_fused(fused_dir, tmp_path / "q4", bits=4)
    assert abs(eight.change) < abs(four.change), (eight, four)


def test_bad_options_and_folders_are_refused_before_work(fused: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, fused_dir = fused
    with pytest.raises(ForgeError, match="unsupported quantization"):
        quantize_fused(fused_dir, tmp_path / "x", bits=3)
    with pytest.raises(ForgeError, match="not a fused model folder"):
        quantize_fused(run_dir, tmp_path / "y")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ForgeError):
        quantize_fused(fused_dir, mine)
    assert (mine / "notes.txt").read_text() == "keep me" and not (mine / QUANTIZE_FILE).exists()


def test_the_cli_quantizes_and_prints_the_cost(fused: tuple[Path, Path], tmp_path: Path) -> None:
    _, fused_dir = fused
    out = tmp_path / "cli-q8"
    proc = run_cli("quantize", str(fused_dir), "--out", str(out), "--bits", "8")
    lines = proc.stdout.splitlines()
    assert lines[0] == str(out.resolve())
    assert lines[1] == read_quantize_report(out).summary() and "validation perplexity" in lines[1]

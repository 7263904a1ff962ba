"""Quantize a fused model (4 or 8 bit, affine, a chosen group size) and measure what it costs.

mlx-lm does the quantization (`quantize_model`, as `mlx_lm.convert -q` would). What it cost is measured
on the run's own validation split: perplexity of the fused model before and after, token-weighted
like the trainer's validation, stored in the output folder (`forgellm_quantize.json`) and shown by
the app and the CLI, so a user sees the price of the smaller model before publishing it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_folder, require_replaceable
from ..errors import ForgeError
from .files import FUSE_RECORD as PROVENANCE_FILE
from .files import QUANTIZE_FILE

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)


@dataclass
class QuantizeReport:
    source: str
    bits: int
    group_size: int
    val_tokens: int
    perplexity_before: float
    perplexity_after: float

    @property
    def change(self) -> float:
        """Relative perplexity change (0.02 = 2% higher after quantization)."""
        return self.perplexity_after / self.perplexity_before - 1

    def summary(self) -> str:
        return (
            f"{self.bits}-bit, group {self.group_size}: validation perplexity {self.perplexity_before:.3f} -> "
            f"{self.perplexity_after:.3f} ({self.change:+.2%}) on {self.val_tokens:,} tokens of the run's split"
        )


def read_quantize_report(folder: Path) -> QuantizeReport | None:
    try:
        return QuantizeReport(**json.loads((Path(folder) / QUANTIZE_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def quantize_fused(fused_dir: Path, out: Path, bits: int = 4, group_size: int = 64) -> QuantizeReport:
    """Write a `bits`-bit copy of the fused folder `fused_dir` into `out`; returns the perplexity report."""
    from mlx_lm.utils import load, quantize_model, save

    from ..evaluation import run_of_checkpoint, run_validation_split, split_loss

    fused_dir, out = Path(fused_dir).resolve(), Path(out).resolve()
    _check_options(bits, group_size)
    provenance = _fuse_provenance(fused_dir)
    require_replaceable(out, QUANTIZE_FILE, "choose a new output folder (an earlier quantized output may be reused)")
    model, tokenizer, config = load(str(fused_dir), return_config=True)
    if config.get("quantization"):
        raise ForgeError(
            "this fused model is already quantized",
            str(fused_dir),
            "fuse the checkpoint with de-quantize on, then quantize that folder",
        )
    _check_divides(config, group_size, fused_dir)
    val = run_validation_split(run_of_checkpoint(Path(provenance["checkpoint"])), tokenizer)
    if len(val) == 0:
        raise ForgeError("the run has no validation split to measure on", str(fused_dir), "train with val_fraction > 0")
    before = split_loss(model, val)
    with contextlib.redirect_stdout(sys.stderr):  # mlx-lm prints its bits-per-weight line; stdout is for results
        model, config = quantize_model(model, config, group_size, bits)
    after = split_loss(model, val)
    report = QuantizeReport(str(fused_dir), bits, group_size, before.tokens, before.perplexity, after.perplexity)
    with atomic_folder(out, replace_marker=QUANTIZE_FILE) as tmp:
        save(tmp, str(fused_dir), model, tokenizer, config, donate_model=True)
        (tmp / QUANTIZE_FILE).write_text(json.dumps(asdict(report), indent=2))
        _carry_card(fused_dir, tmp, report)
    return report


def _carry_card(fused_dir: Path, out: Path, report: QuantizeReport) -> None:
    """The fused model's card (written first if it has none) with a section on the quantization, and its chart.

    The appended section makes it an edited card from then on: kept as it is, never regenerated.
    """
    from .card import CHART_FILE, ensure_card

    ensure_card(fused_dir)
    text = (fused_dir / "README.md").read_text(encoding="utf-8")
    text = text.rstrip("\n") + (
        f"\n\n## Quantized\n\nThis repo holds the model quantized by mlx-lm to {report.summary()}. "
        "The round-trip check above was made on the unquantized fuse.\n"
    )
    (out / "README.md").write_text(text, encoding="utf-8")
    if (fused_dir / CHART_FILE).is_file():
        shutil.copy2(fused_dir / CHART_FILE, out / CHART_FILE)


def _check_options(bits: int, group_size: int) -> None:
    if bits not in BITS or group_size not in GROUP_SIZES:
        raise ForgeError(
            f"unsupported quantization: {bits} bits, group size {group_size}",
            "quantize",
            f"choose bits from {BITS} and a group size from {GROUP_SIZES}",
        )


def _fuse_provenance(fused_dir: Path) -> dict:
    try:
        return json.loads((fused_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ForgeError(
            "not a fused model folder (no forgellm_fuse.json)",
            str(fused_dir),
            "fuse a run's checkpoint first (Publishing tab or `forgellm fuse`)",
        ) from e


def _check_divides(config: dict, group_size: int, where: Path) -> None:
    sizes = {key: config[key] for key in ("hidden_size", "intermediate_size") if key in config}
    if any(size % group_size for size in sizes.values()):
        raise ForgeError(
            f"group size {group_size} does not divide the model's sizes {sizes}",
            str(where / "config.json"),
            f"choose one of {[g for g in GROUP_SIZES if all(s % g == 0 for s in sizes.values())]}",
        )

"""Gain and forgetting per run: what each checkpoint learned of the domain, and what it lost of general text.

For the base model and every kept checkpoint of a run, `measure_gain` measures perplexity on

- **domain**: the run's validation split (held-out domain documents, exactly as the trainer evaluated
  it, so a checkpoint's figure is its logged validation loss), and
- **general**: held-out general text, never trained on when such text exists. The pipeline does not hold
  general text out: a mixture's general corpus goes to training in a seeded order, as much as the ratio
  needs, repeated when too small. So the general set is, in order of preference:
  1. `--general PATH` when given (less any document the run trained on);
  2. the mixture's general documents training never used (found with the pipeline's own selection,
     `data.cpt.general_segments`);
  3. the shipped general sample (`dataset/general`) less any document the run trained on; for a run
     without a mixture this is the usual source;
  4. else (every general document was trained on) `val_fraction` of the mixture's general documents,
     chosen by document with the split rule of `data.split`; the report then says `general_held_out:
     false` and why: the figure shows retention of text the run saw, not held-out general ability.
  At most `max_general_tokens` tokens of it, whole documents in seeded order.

Knowledge probes (`forgellm.probes`) are scored for every model too (CPT runs), at one forward pass per
item: accuracy and mean gold log-probability.

**Best balance**: the checkpoint with the lowest domain perplexity among those whose general perplexity
rose by at most `threshold` (relative, default 10%) over the base model's. A checkpoint above the
threshold gets a warning naming it and the balanced checkpoint. The result goes to the run folder
(`runs.GAIN_FILE`, written atomically); `charts.gain_figure` draws it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import paths, runs
from .atomic import write_json
from .data.records import Split
from .errors import ForgeError
from .evaluation import Documents, Measure, encode_texts, measure_split, read_documents, windows
from .probes import DEFAULT_MAX_ITEMS, ProbeItem, ProbeScore

DEFAULT_THRESHOLD = 0.10
DEFAULT_MAX_GENERAL_TOKENS = 16384
SCHEMA_VERSION = 1


@dataclass
class GainRow:
    """One model of the comparison: the base (step None) or a checkpoint."""

    label: str  # "base" or "step N"
    step: int | None
    domain: Measure
    general: Measure
    domain_change: float  # relative perplexity change from the base (-0.3 = 30% lower: a gain)
    general_change: float  # the same on general text (+0.2 = 20% higher: forgetting)
    is_best: bool = False  # the run's best checkpoint by validation loss
    probes: ProbeScore | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("domain", "general", "probes")}
        out["domain"], out["general"] = self.domain.as_dict(), self.general.as_dict()
        out["probes"] = self.probes.as_dict() if self.probes else None
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GainRow:
        probes = ProbeScore.from_dict(d["probes"]) if d.get("probes") else None
        measures = Measure.from_dict(d["domain"]), Measure.from_dict(d["general"])
        return cls(d["label"], d["step"], *measures, d["domain_change"], d["general_change"], d["is_best"], probes)


@dataclass
class GainReport:
    """What `measure_gain` writes to the run folder."""

    run: str
    model: str
    threshold: float
    domain_data: str
    general_data: str
    general_held_out: bool  # False: every general document was trained on (see the module)
    rows: list[GainRow]
    balanced_step: int | None  # best balance (see the module); None when no checkpoint is within the threshold
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probe_items: int = 0
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [r.as_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GainReport:
        keys = [k for k in cls.__dataclass_fields__ if k != "rows"]
        return cls(**{k: d[k] for k in keys if k in d}, rows=[GainRow.from_dict(r) for r in d.get("rows", [])])

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Headers and rows for a table (the CLI's and the Monitoring tab's)."""
        headers = ["model", "domain ppl", "domain change", "general ppl", "general change"]
        if self.probe_items:
            headers += ["probe accuracy", "probe gold log-prob"]
        rows = []
        for r in self.rows:
            tags = [t for t, on in (("best val", r.is_best), ("balanced", r.step == self.balanced_step)) if on]
            label = r.label + (f" ({', '.join(tags)})" if tags and r.step is not None else "")
            row = [label, round(r.domain.perplexity, 3), _pct(r.domain_change, r.step)]
            row += [round(r.general.perplexity, 3), _pct(r.general_change, r.step)]
            if self.probe_items:
                row += [f"{r.probes.accuracy:.1%}", round(r.probes.mean_logprob, 3)] if r.probes else ["-", "-"]
            rows.append(row)
        return headers, rows

    def findings(self) -> list[str]:
        """The lines around the table: what was measured, notes, warnings and the best balance."""
        lines = [f"domain: {self.domain_data}", f"general: {self.general_data}"]
        lines += [f"note: {n}" for n in self.notes] + [f"warning: {w}" for w in self.warnings]
        if self.balanced_step is not None:
            lines.append(f"best balance: step {self.balanced_step} ({balance_rule(self.threshold)})")
        return lines

    def summary(self) -> str:
        headers, rows = self.table()
        cells = [headers] + [[str(c) for c in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        table = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in cells
        ]
        return "\n".join([f"gain and forgetting of {self.run}", *table, *self.findings()])


def _pct(change: float, step: int | None) -> str:
    return "-" if step is None else f"{change:+.1%}"


def balance_rule(threshold: float) -> str:
    return f"the lowest domain perplexity among checkpoints whose general perplexity rose at most {threshold:.0%}"


def balanced_step(rows: list[GainRow], threshold: float) -> int | None:
    """The best balance (see the module) among the checkpoint rows, or None when none is within `threshold`."""
    within = [r for r in rows if r.step is not None and r.general_change <= threshold]
    return min(within, key=lambda r: (r.domain.perplexity, r.step)).step if within else None


def forgetting_warnings(rows: list[GainRow], threshold: float, balanced: int | None) -> list[str]:
    """One warning when any checkpoint's general perplexity rose by more than `threshold`."""
    over = [r for r in rows if r.step is not None and r.general_change > threshold]
    if not over:
        return []
    listed = ", ".join(f"step {r.step} ({r.general_change:+.1%})" for r in over)
    text = f"general perplexity rose more than {threshold:.0%} over the base model at {listed}: forgetting."
    if balanced is None:
        return [
            text + " No checkpoint stays within the threshold: lower the learning rate, train fewer steps or mix "
            "general text into training (mixture.general)."
        ]
    return [text + f" Best balance: step {balanced} ({balance_rule(threshold)}); use --checkpoint {balanced}."]


# ---- general text --------------------------------------------------------------------------------------


@dataclass
class GeneralSet:
    texts: list[str]
    source: str
    held_out: bool
    note: str | None = None


def mixture_used(general: Documents, tokenizer: Any, needed: int, seed: int) -> set[int]:
    """Indices of the general documents that training used: the pipeline's own seeded selection of
    `needed` tokens (`data.cpt.general_segments`), replayed on the same documents."""
    from .data.cpt import Corpus, general_segments

    _, lengths = encode_texts(general.texts, tokenizer)
    corpus = Corpus([], Path(), lengths, general.digests)
    segments, _ = general_segments(corpus, needed, seed)
    return set(np.searchsorted(corpus.starts, segments.start).tolist())


def general_set(cfg: Any, tokenizer: Any, report: dict[str, Any], override: Path | None = None) -> GeneralSet:
    """The general text to measure forgetting on (see the module for the order of preference).

    Args:
        cfg: The run's config.
        tokenizer: The base model's tokenizer.
        report: The run's data report (`prepare(...).report`): how many general tokens training used.
        override: A file or folder of general text to use instead.

    Raises:
        ForgeError: when `override` has no document the run did not train on, or no general text is left.
    """
    from .data.ingest import as_paths
    from .data.split import rank, val_count

    seen = set(read_documents(as_paths(cfg.data), cfg.text_field).digests.tolist())
    mixture = report.get("mixture") if cfg.train_type == "cpt" else None
    general = None
    if mixture:
        general = read_documents(as_paths(cfg.mixture.general), cfg.text_field, "mixture.general")
        used = mixture_used(general, tokenizer, int(mixture["general_tokens_used"]), cfg.seed)
        seen |= {int(general.digests[i]) for i in used}

    def unseen(docs: Documents) -> list[str]:
        return [t for t, d in zip(docs.texts, docs.digests.tolist(), strict=True) if d not in seen]

    if override is not None:
        texts = unseen(read_documents([Path(override)], cfg.text_field, "--general"))
        if not texts:
            raise ForgeError(
                "no document here that the run did not train on", str(override), "give general text the run never saw"
            )
        return GeneralSet(texts, f"{override} ({len(texts)} documents the run did not train on)", True)
    if general is not None and (texts := unseen(general)):
        return GeneralSet(texts, f"{mixture['general']}: {len(texts)} documents training did not use", True)
    shipped = paths.dataset_dir() / "general"
    texts = unseen(read_documents([shipped], "text", "general")) if shipped.is_dir() else []
    if texts:
        return GeneralSet(texts, f"the shipped general sample dataset/general ({len(texts)} documents)", True)
    if general is None or not general.texts:
        raise ForgeError(
            "no general text the run did not train on",
            f"data: {cfg.data}",
            "pass --general PATH with general text (a folder of .txt files) the run never saw",
        )
    k = val_count(len(general.texts), cfg.val_fraction)
    texts = [general.texts[i] for i in sorted(rank(general.digests, cfg.seed)[:k].tolist())]
    note = (
        f"every general document was used in training (mixture.general repeated {mixture['general_repeats']}x): "
        f"general perplexity is measured on {k} of them, so it shows retention of text the run saw, not held-out "
        "general ability; pass --general PATH with text the run never saw for that"
    )
    return GeneralSet(texts, f"{mixture['general']}: {k} documents, trained on", False, note)


def general_split(texts: list[str], tokenizer: Any, seq_len: int, max_tokens: int, seed: int) -> Split:
    """Windows of at most `max_tokens` tokens of `texts`, whole documents in seeded order (the last one cut)."""
    from .data.tokens import tokenizer_info

    order = np.random.default_rng(seed).permutation(len(texts))
    stream, _ = encode_texts([texts[i] for i in order], tokenizer)
    return windows(stream[: max_tokens + 1], seq_len, tokenizer_info(tokenizer).pad_id)


# ---- the measurement -----------------------------------------------------------------------------------


def measure_gain(
    run_dir: Path,
    threshold: float = DEFAULT_THRESHOLD,
    general: Path | None = None,
    probes: bool = True,
    max_general_tokens: int = DEFAULT_MAX_GENERAL_TOKENS,
    max_probe_items: int = DEFAULT_MAX_ITEMS,
    progress: Callable[[str], None] | None = None,
) -> GainReport:
    """Measure the base model and every kept checkpoint of `run_dir`; write and return the report.

    Args:
        run_dir: A run folder with at least one complete checkpoint.
        threshold: Relative rise of general perplexity over the base that counts as forgetting (0.10 = 10%).
        general: General text to use instead of the default choice (see the module).
        probes: Also score knowledge probes (CPT runs).
        max_general_tokens: Cap on the general text measured.
        max_probe_items: Cap on probe items.
        progress: Called with a line before each model is measured.

    Raises:
        ForgeError: for a folder that is not a run, a run without checkpoints, no general text.
    """
    from .data import prepare
    from .evaluation import load_model
    from .training.session import load_run_config

    run_dir = Path(run_dir).resolve()
    cfg = load_run_config(run_dir)
    steps = runs.checkpoint_steps(run_dir)
    if not steps:
        raise ForgeError("this run has no complete checkpoint yet", str(run_dir), "train longer or wait for save_every")
    say = progress or (lambda _line: None)
    say(f"preparing the data of {run_dir.name}")
    model, tokenizer = load_model(cfg.model)
    prepared = prepare(cfg, tokenizer)
    chosen = general_set(cfg, tokenizer, prepared.report, general)
    sets = _sets(run_dir, cfg, tokenizer, prepared.val, chosen, max_general_tokens, max_probe_items if probes else 0)
    best, rows = runs.best_step(run_dir), []
    for step in [None, *steps]:
        say(f"measuring {'base' if step is None else f'step {step}'}")
        if step is not None:  # the base model is the one already loaded
            model = None  # one model in memory at a time
            model, _ = load_model(cfg.model, runs.checkpoint_dir(run_dir, step))
        rows.append(_row(step, model, tokenizer, sets, rows[0] if rows else None, step is not None and step == best))
    report = _report(run_dir, cfg, prepared.report, chosen, sets.general, rows, threshold, len(sets.items))
    try:
        write_json(run_dir / runs.GAIN_FILE, report.as_dict())
    except OSError as e:
        raise ForgeError(f"cannot write the result ({e})", str(run_dir / runs.GAIN_FILE), "check the disk") from e
    return report


@dataclass
class _Sets:
    """What every model is measured on."""

    domain: Split
    general: Split
    items: list[ProbeItem]
    eos: int
    by: str  # the domain split's standard-error samples: documents (CPT) or rows (IFT)


def _sets(run_dir, cfg, tokenizer, val: Split, chosen: GeneralSet, max_tokens: int, max_items: int) -> _Sets:
    from .data.tokens import tokenizer_info
    from .probes import run_items

    general = general_split(chosen.texts, tokenizer, cfg.max_seq_length, max_tokens, cfg.seed)
    cpt = cfg.train_type == "cpt"
    items = run_items(run_dir, max_items=max_items) if cpt and max_items > 0 else []
    return _Sets(val, general, items, tokenizer_info(tokenizer).eos_id, "documents" if cpt else "rows")


def _row(step: int | None, model: Any, tokenizer: Any, sets: _Sets, base: GainRow | None, is_best: bool) -> GainRow:
    from .probes import score_items

    domain = measure_split(model, sets.domain, sets.eos, sets.by)
    general = measure_split(model, sets.general, sets.eos, "documents")
    probes = score_items(model, tokenizer, sets.items) if sets.items else None
    changes = (_change(domain, base.domain), _change(general, base.general)) if base else (0.0, 0.0)
    return GainRow("base" if step is None else f"step {step}", step, domain, general, *changes, is_best, probes)


def _change(now: Measure, base: Measure) -> float:
    return now.perplexity / base.perplexity - 1.0


def _report(run_dir, cfg, data_report, chosen, general_rows, rows, threshold, probe_items) -> GainReport:
    val_docs = (data_report.get("documents") or data_report.get("examples") or {}).get("val")
    unit = "documents" if cfg.train_type == "cpt" else "examples"
    domain = f"the run's validation split ({val_docs} {unit}, {rows[0].domain.tokens:,} tokens scored)"
    general = f"{chosen.source}; {rows[0].general.tokens:,} tokens scored in {len(general_rows)} windows"
    balanced = balanced_step(rows, threshold)
    return GainReport(
        run=str(run_dir),
        model=cfg.model,
        threshold=threshold,
        domain_data=domain,
        general_data=general,
        general_held_out=chosen.held_out,
        rows=rows,
        balanced_step=balanced,
        warnings=forgetting_warnings(rows, threshold, balanced),
        notes=[chosen.note] if chosen.note else [],
        probe_items=probe_items,
        created_at=runs.now_iso(),
    )


def read_gain(run_dir: Path) -> GainReport | None:
    """The last stored result of a run, or None (never measured, or a file this version cannot read)."""
    import json

    try:
        return GainReport.from_dict(json.loads((Path(run_dir) / runs.GAIN_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None

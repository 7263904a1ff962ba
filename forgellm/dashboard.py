"""The training dashboard without Gradio: metrics read incrementally, cards, health warnings, the best
checkpoints, and the comparison of runs. The Monitoring tab, `forgellm report` and `forgellm compare`
show what these functions return.

Everything is read from run folders (README "The run folder"); nothing here writes. Bad input never
raises: a torn last metrics line or a garbage line is skipped, no metrics gives "no data yet" figures,
a missing or malformed status.json gives the state `unknown`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import plotly.graph_objects as go
import yaml

from . import charts, paths, runs
from .errors import ForgeError
from .metric_columns import MetricColumns, as_columns, is_usable
from .metrics_reader import MetricsCache, parse_metric_rows
from .run_summary import format_duration
from .runs import MetricRecord, RunStatus

DEFAULT_SMOOTHING = 0.6  # TensorBoard's default
MISSING = "-"

# ---- incremental metrics reading -------------------------------------------------------------------


def parse_metric_lines(chunk: bytes) -> list[MetricRecord]:
    """Typed records of whole metrics.jsonl lines; lines that are not a usable record are skipped.

    A usable record has a known `split`, a numeric `step` and a numeric `loss`; anything else (a disk
    fault, a hand edit, a kind of record this version does not know) is left out, as a torn line is.
    """
    records = (runs.record_from_dict(row) for row in parse_metric_rows(chunk))
    return [record for record in records if record is not None and is_usable(record)]


def read_records(run_dir: Path) -> list[MetricRecord]:
    """Every usable record of the run's metrics.jsonl in file order (a torn last line left out)."""
    try:
        data = (Path(run_dir) / runs.METRICS_FILE).read_bytes()
    except FileNotFoundError:
        return []
    return parse_metric_lines(data[: data.rfind(b"\n") + 1])


# ---- cards -----------------------------------------------------------------------------------------


@dataclass
class Cards:
    """The dashboard's headline numbers, formatted for people (`-` where not known yet)."""

    state: str
    step: str  # "1,200 / 5,000"
    progress: float  # 0..1 (0 when the total is not known yet)
    epoch: str
    train_loss: str
    val_loss: str  # with its step
    val_perplexity: str
    best_val: str  # best validation loss and its step
    tokens_per_sec: str
    trained_tokens: str
    peak_memory: str
    learning_rate: str
    elapsed: str
    eta: str
    checkpoints: str

    def as_dict(self) -> dict[str, str]:
        """Label -> value, in display order (progress as a percentage)."""
        labels = {f.name: f.name.replace("_", " ") for f in dataclasses.fields(self)}
        labels.update(val_perplexity="val perplexity", tokens_per_sec="tokens/s", best_val="best val loss")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["progress"] = f"{self.progress:.0%}"
        return {labels[name]: value for name, value in values.items()}


def cards(run_dir: Path, records: Sequence[MetricRecord] | MetricColumns, status: RunStatus | None) -> Cards:
    """Headline numbers of a run from its records and status (read from `run_dir` when `status` is None)."""
    columns = as_columns(records)
    if status is None:
        status = runs.summarize(run_dir).status
    train, val = columns.train, columns.val
    step = max([int(_number(status.step) or 0), *(int(s.step[-1]) for s in (train, val) if len(s))])
    total = int(_number(status.total_steps) or 0)
    state = status.effective_state()
    eta = _number(status.eta_s)
    last_val = val.last("loss")
    best = charts.best_validation(columns)
    seconds = _training_seconds(columns)
    return Cards(
        state=state,
        step=f"{step:,} / {total:,}" if total else f"{step:,}",
        progress=min(1.0, step / total) if total else 0.0,
        epoch=_value(train.last("epoch"), "{:.2f}", _number(status.epoch)),
        train_loss=_value(train.last("loss"), "{:.4f}"),
        val_loss=f"{last_val[1]:.4f} (step {last_val[0]:,})" if last_val else MISSING,
        val_perplexity=_perplexity(last_val[1]) if last_val else MISSING,
        best_val=f"{best[1]:.4f} (step {best[0]:,})" if best else MISSING,
        tokens_per_sec=_value(train.last("tokens_per_sec"), "{:,.0f}", _number(status.tokens_per_sec)),
        trained_tokens=_count(train.last("trained_tokens")),
        peak_memory=_value(train.last("peak_memory_gb"), "{:.2f} GB"),
        learning_rate=_value(train.last("lr"), "{:.2e}"),
        elapsed=format_duration(seconds) if seconds is not None else MISSING,
        eta=format_duration(eta) if state == "running" and eta is not None else MISSING,
        checkpoints=_checkpoints(run_dir),
    )


def _number(value: Any) -> float | None:
    """A status.json number, or None (a hand-edited file may hold anything)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _value(last: tuple[int, float] | None, template: str, fallback: float | None = None) -> str:
    value = last[1] if last else fallback
    return template.format(value) if value is not None else MISSING


def _perplexity(loss: float) -> str:
    ppl = math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.inf
    return f"{ppl:,.2f}" if ppl < 1e6 else f"{ppl:.3g}"


def _count(last: tuple[int, float] | None) -> str:
    """1234567 -> 1.23M."""
    if last is None:
        return MISSING
    n = last[1]
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _training_seconds(columns: MetricColumns) -> float | None:
    """Training time so far: the latest `elapsed_s` of any record (it continues across resumes)."""
    latest = [s.last("elapsed_s") for s in (columns.train, columns.val)]
    known = [value for _, value in filter(None, latest)]
    return max(known) if known else None


def _checkpoints(run_dir: Path) -> str:
    steps = runs.checkpoint_steps(run_dir)
    return f"{len(steps)} kept, latest step {steps[-1]:,}" if steps else "none yet"


# ---- health ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthWarning:
    """Something in the curves that deserves attention: `kind` (overfitting, gap, flat, spiky, nan,
    slowdown), what was seen, and what to do about it."""

    kind: str
    message: str
    recommendation: str


MIN_REPORTS = 10  # fewer training reports say too little about a trend to warn about it
LOSS_SMOOTHING = 0.6  # the smoothing of the training loss the checks compare (raw reports are noisy)


def health(
    records: Sequence[MetricRecord] | MetricColumns,
    status: RunStatus | None = None,
    gap_threshold: float = 0.15,
    flat_change: float = 0.01,
    spike_factor: float = 10.0,
    slowdown_drop: float = 0.30,
    rising_evals: int = 2,
) -> list[HealthWarning]:
    """Warnings about a run's curves, most serious first; an empty list for a healthy run.

    Args:
        records: The run's metric records, or their columns.
        status: The run's status; a run that failed because its loss became NaN says so only there.
        gap_threshold: Warn when the validation loss is this much (relative to it) above the training loss.
        flat_change: Warn when the training loss changed less than this (relative) over the last 20% of reports.
        spike_factor: A rise of the training loss between reports this many times the typical change is a spike.
        slowdown_drop: Warn when recent tokens/s is this much below the run's earlier median.
        rising_evals: Evaluations in a row with a rising validation loss that count as overfitting.
    """
    columns = as_columns(records)
    checks = (
        _diverging(columns, status),
        _overfitting(columns, rising_evals),
        _gap(columns, gap_threshold),
        _spiky(columns, spike_factor),
        _flat(columns, flat_change),
        _slowdown(columns, slowdown_drop),
    )
    return [warning for warning in checks if warning is not None]


def _diverging(columns: MetricColumns, status: RunStatus | None) -> HealthWarning | None:
    """NaN or inf in a loss (or the run failed on one), or the smoothed training loss at twice its low."""
    fix = (
        "Lower learning_rate (3-10x), add warmup_steps and keep max_grad_norm (gradient clipping) on; "
        "resume from the last good checkpoint or start again."
    )
    for name, split in (("training", columns.train), ("validation", columns.val)):
        bad = ~np.isfinite(split["loss"])
        if bad.any():
            return HealthWarning(
                "nan", f"The {name} loss became NaN or inf at step {int(split.step[bad.argmax()]):,}.", fix
            )
    if status is not None and status.error and "loss became" in status.error:
        return HealthWarning("nan", f"The run failed: {status.error}.", fix)
    steps, smoothed = charts.smoothed_train_loss(columns, LOSS_SMOOTHING)
    if len(smoothed) >= MIN_REPORTS and smoothed[-1] > 2 * smoothed.min() > 0:
        low = int(steps[smoothed.argmin()])
        return HealthWarning(
            "nan",
            f"Training loss is diverging: {smoothed[-1]:.4f} at step {int(steps[-1]):,}, over twice its low "
            f"({smoothed.min():.4f} at step {low:,}).",
            fix,
        )
    return None


def _overfitting(columns: MetricColumns, rising_evals: int) -> HealthWarning | None:
    """The validation loss rose for `rising_evals` evaluations in a row while the training loss kept falling."""
    val_steps, val = columns.val.finite("loss")
    rises = 0
    while rises + 1 < len(val) and val[-1 - rises] > val[-2 - rises]:
        rises += 1
    if rises < rising_evals:
        return None
    start, end = int(val_steps[-1 - rises]), int(val_steps[-1])
    if not _train_falling(columns, start, end):
        return None
    return HealthWarning(
        "overfitting",
        f"Validation loss rose for {rises} evaluations in a row ({val[-1 - rises]:.4f} at step {start:,} to "
        f"{val[-1]:.4f} at step {end:,}) while training loss kept falling: the model is memorising its training data.",
        f"{_keep_best(columns)} Next time: more training data, or regularise: lora_parameters.dropout (e.g. 0.05-0.1), "
        "weight_decay (e.g. 0.01-0.1), fewer layers (num_layers) or a lower lora_parameters.rank; "
        "early_stopping.patience stops such a run by itself.",
    )


def _keep_best(columns: MetricColumns) -> str:
    """Which checkpoint to keep: the best validation loss, unless none beats the untrained model (step 0)."""
    best = charts.best_validation(columns)
    steps, losses = columns.val.finite("loss")
    baseline = losses[steps == 0]
    if best is None or (len(baseline) and best[1] >= baseline[0]):
        return "No checkpoint beats the untrained model: lower learning_rate and start again."
    return f"Keep the best checkpoint, step {best[0]:,} (val loss {best[1]:.4f}: `--checkpoint best`), or stop now."


FALLING = 0.005  # a relative drop of the mean training loss smaller than this is noise, not "still falling"


def _train_falling(columns: MetricColumns, start: int, end: int) -> bool:
    """The training loss reported between two steps is clearly lower in the second half than in the first."""
    steps, losses = columns.train.finite("loss")
    window = losses[(steps >= start) & (steps <= end)]
    if len(window) < 2:
        return False
    half = len(window) // 2
    before, after = float(window[:half].mean()), float(window[half:].mean())
    return after < before * (1 - FALLING)


def _gap(columns: MetricColumns, threshold: float) -> HealthWarning | None:
    """The latest validation loss is more than `threshold` (relative to it) above the training loss then."""
    last = columns.val.last("loss")
    steps, losses = columns.train.finite("loss")
    if last is None or last[0] == 0 or last[1] <= 0:
        return None
    before = losses[steps <= last[0]][-5:]  # the last few reports up to that evaluation, averaged: less noise
    if not len(before):
        return None
    train = float(before.mean())
    gap = (last[1] - train) / last[1]
    if gap <= threshold:
        return None
    return HealthWarning(
        "gap",
        f"Validation loss ({last[1]:.4f}) is {gap:.0%} above training loss ({train:.4f}) at step {last[0]:,} "
        f"(warning above {threshold:.0%}).",
        "The model fits its training text much better than unseen text. Add (more varied) training data, regularise "
        "(lora_parameters.dropout, weight_decay, a lower rank or fewer layers) or train fewer steps, and pick "
        "checkpoints by validation loss, not training loss.",
    )


def _spiky(columns: MetricColumns, factor: float) -> HealthWarning | None:
    """Rises of the training loss between reports far above the typical change (and above 1% of the loss)."""
    steps, losses = columns.train.finite("loss")
    if len(losses) < MIN_REPORTS:
        return None
    change = np.diff(losses)
    typical = float(np.median(np.abs(change)))
    if typical <= 0:
        return None
    spikes = np.flatnonzero(change > max(factor * typical, 0.01 * float(np.median(losses))))
    if not len(spikes):
        return None
    worst = spikes[change[spikes].argmax()]
    return HealthWarning(
        "spiky",
        f"{len(spikes)} sudden rise(s) of the training loss; the largest, +{change[worst]:.4f} at step "
        f"{int(steps[worst + 1]):,}, is {change[worst] / typical:.0f}x the typical change between reports.",
        "Lower learning_rate, add warmup_steps, or set max_grad_norm (gradient clipping, e.g. 1.0); a larger "
        "batch_size or grad_accumulation_steps also steadies the loss.",
    )


def _flat(columns: MetricColumns, min_change: float) -> HealthWarning | None:
    """The training loss changed less than `min_change` (relative) over the last 20% of reports."""
    steps, losses = columns.train.finite("loss")
    if len(losses) < MIN_REPORTS:
        return None
    window = losses[-max(6, len(losses) // 5) :]
    third = len(window) // 3
    before, after = float(window[:third].mean()), float(window[-third:].mean())
    if before <= 0 or abs(after - before) / before >= min_change:
        return None
    first_step = int(steps[-len(window)])
    return HealthWarning(
        "flat",
        f"Training loss changed by {abs(after - before) / before:.1%} over the last {len(window)} reports "
        f"(steps {first_step:,} to {int(steps[-1]):,}).",
        "If the loss is still high, raise learning_rate (e.g. 2-3x) or check the schedule (warmup_steps, "
        "min_learning_rate); if validation loss has stopped improving too, training has converged: stop and keep "
        "the best checkpoint.",
    )


def _slowdown(columns: MetricColumns, drop: float) -> HealthWarning | None:
    """Recent tokens/s more than `drop` below the median of the run's earlier reports."""
    _, tps = columns.train.finite("tokens_per_sec")
    if len(tps) < MIN_REPORTS:
        return None
    recent = max(3, len(tps) // 10)
    now, before = float(np.median(tps[-recent:])), float(np.median(tps[:-recent]))
    if before <= 0 or now >= (1 - drop) * before:
        return None
    memory = columns.train.last("peak_memory_gb")
    memory_note = f" (peak memory {memory[1]:.2f} GB)" if memory else ""
    return HealthWarning(
        "slowdown",
        f"Throughput fell {1 - now / before:.0%}: {now:,.0f} tokens/s over the last {recent} reports against "
        f"{before:,.0f} earlier in the run.",
        "Something else may be using the machine (another run, the Chat tab, other programs), or memory is short "
        f"and the system is swapping{memory_note}: close other programs, or lower batch_size or max_seq_length, "
        "or turn on grad_checkpoint.",
    )


# ---- checkpoints -----------------------------------------------------------------------------------


class RankedCheckpoint(NamedTuple):
    """A kept checkpoint and the validation loss logged at its step."""

    step: int
    val_loss: float
    path: Path


def top_checkpoints(
    run_dir: Path, records: Sequence[MetricRecord] | MetricColumns, n: int = 3
) -> list[RankedCheckpoint]:
    """The `n` kept checkpoints with the lowest validation loss logged at their step, best first.

    Checkpoints saved at a step without a validation (a stop, `save_every` between evaluations) are not
    ranked: there is nothing to rank them by.
    """
    steps, losses = as_columns(records).val.finite("loss")
    loss_at = dict(zip(steps.tolist(), losses.tolist(), strict=True))
    ranked = [
        RankedCheckpoint(step, loss_at[step], runs.checkpoint_dir(run_dir, step))
        for step in runs.checkpoint_steps(run_dir)
        if step in loss_at
    ]
    return sorted(ranked, key=lambda c: (c.val_loss, c.step))[:n]


# ---- one refresh -----------------------------------------------------------------------------------


@dataclass
class Dashboard:
    """Everything the dashboard shows for one run at one moment."""

    run_dir: Path
    cards: Cards
    warnings: list[HealthWarning]
    checkpoints: list[RankedCheckpoint]
    loss: go.Figure
    perplexity: go.Figure
    learning_rate: go.Figure
    throughput: go.Figure


def refresh(
    run_dir: Path, cache: MetricsCache | None = None, smoothing: float = DEFAULT_SMOOTHING, log_y: bool = False
) -> Dashboard:
    """Read what is new in the run folder and build every card, warning and figure of the dashboard.

    Args:
        run_dir: The run folder.
        cache: Keeps what was read between refreshes (a new one reads the whole metrics file).
        smoothing: Smoothing of the training loss in the loss and perplexity figures, 0 to 0.99.
        log_y: A logarithmic loss axis.
    """
    return build_dashboard(run_dir, (cache or MetricsCache()).columns(run_dir), smoothing, log_y)


def build_dashboard(
    run_dir: Path, columns: MetricColumns, smoothing: float = DEFAULT_SMOOTHING, log_y: bool = False
) -> Dashboard:
    """The dashboard of a run from metrics already read (`refresh` reads them; a report reads them once)."""
    run_dir = Path(run_dir)
    status = runs.summarize(run_dir).status
    return Dashboard(
        run_dir=run_dir,
        cards=cards(run_dir, columns, status),
        warnings=health(columns, status),
        checkpoints=top_checkpoints(run_dir, columns),
        loss=charts.loss_figure(columns, smoothing=smoothing, log_y=log_y),
        perplexity=charts.perplexity_figure(columns, smoothing=smoothing),
        learning_rate=charts.learning_rate_figure(columns),
        throughput=charts.throughput_memory_figure(columns),
    )


# ---- finding runs ----------------------------------------------------------------------------------


def find_run(value: str | Path) -> Path:
    """A run folder given as a path, or as a run name under runs/.

    Raises:
        ForgeError: when neither is a run folder.
    """
    for candidate in (Path(value).expanduser(), paths.runs_dir() / str(value)):
        if candidate.is_dir() and runs.is_run_dir(candidate):
            return candidate
    raise ForgeError(
        f"no run folder named {str(value)!r}",
        "run",
        f"pass a run folder, or a run name under {paths.runs_dir()} (see `forgellm runs`)",
    )


def run_listing(run: runs.RunSummary) -> dict[str, Any]:
    """One run of `forgellm runs --json`: what the text listing shows, as JSON values."""
    status = run.status
    return {
        "name": run.name,
        "path": str(run.path),
        "state": run.state,
        "step": _int(status.step) or 0,
        "total_steps": _int(status.total_steps),
        "best_val_loss": _number(status.best_val_loss),
        "best_step": _int(status.best_step),
        "started_at": status.started_at if isinstance(status.started_at, str) else None,
    }


# ---- comparing runs --------------------------------------------------------------------------------


@dataclass
class RunFacts:
    """One run's line in a comparison (numbers unformatted; None where not known)."""

    name: str
    path: Path
    state: str
    best_val_loss: float | None
    best_step: int | None
    final_train_loss: float | None
    median_tokens_per_sec: float | None
    duration_s: float | None
    step: int
    total_steps: int | None

    def row(self) -> list[str]:
        return [
            self.name,
            self.state,
            f"{self.best_val_loss:.4f}" if self.best_val_loss is not None else MISSING,
            f"{self.best_step:,}" if self.best_step is not None else MISSING,
            f"{self.final_train_loss:.4f}" if self.final_train_loss is not None else MISSING,
            f"{self.median_tokens_per_sec:,.0f}" if self.median_tokens_per_sec is not None else MISSING,
            format_duration(self.duration_s) if self.duration_s is not None else MISSING,
            f"{self.step:,} / {self.total_steps:,}" if self.total_steps else f"{self.step:,}",
        ]


SUMMARY_HEADERS = ["run", "state", "best val loss", "best step", "final train loss", "tokens/s", "duration", "steps"]


@dataclass
class Comparison:
    """Several runs side by side: facts, overlaid curves, and the config keys that differ."""

    runs: list[RunFacts]
    loss: go.Figure
    perplexity: go.Figure
    config_headers: list[str]  # ["key", run1, run2, ...]
    config_rows: list[list[str]]

    def summary_rows(self) -> list[list[str]]:
        return [facts.row() for facts in self.runs]

    def to_text(self) -> str:
        diff = format_table(self.config_headers, self.config_rows) if self.config_rows else "(the configs are the same)"
        return f"{format_table(SUMMARY_HEADERS, self.summary_rows())}\n\nconfig differences:\n{diff}"

    def to_dict(self) -> dict[str, Any]:
        facts = [{**dataclasses.asdict(f), "path": str(f.path)} for f in self.runs]
        return {"runs": facts, "config_diff": {"headers": self.config_headers, "rows": self.config_rows}}


def compare_runs(run_dirs: Sequence[Path], cache: MetricsCache | None = None) -> Comparison:
    """Compare runs: validation loss and perplexity overlaid, a summary line each, and their config diff."""
    cache = cache or MetricsCache()
    run_dirs = [Path(d) for d in run_dirs]
    names = _labels(run_dirs)
    columns = [cache.columns(d) for d in run_dirs]
    facts = [_facts(d, name, c) for d, name, c in zip(run_dirs, names, columns, strict=True)]
    val = [(name, *c.val.finite("loss")) for name, c in zip(names, columns, strict=True)]
    with np.errstate(over="ignore"):
        ppl = [(name, steps, np.exp(losses)) for name, steps, losses in val]
    headers, rows = config_diff([read_config(d) for d in run_dirs], names)
    return Comparison(
        runs=facts,
        loss=charts.overlay_figure("Validation loss", "val loss", val),
        perplexity=charts.overlay_figure("Validation perplexity", "perplexity", ppl, log_y=True),
        config_headers=headers,
        config_rows=rows,
    )


def _labels(run_dirs: list[Path]) -> list[str]:
    """Run names; full paths when two runs in different folders share a name."""
    names = [d.name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def _facts(run_dir: Path, name: str, columns: MetricColumns) -> RunFacts:
    summary = runs.summarize(run_dir)
    best = charts.best_validation(columns)
    last_loss = columns.train.last("loss")
    _, tps = columns.train.finite("tokens_per_sec")
    steps = [int(s.step[-1]) for s in (columns.train, columns.val) if len(s)]
    return RunFacts(
        name=name,
        path=run_dir,
        state=summary.state,
        best_val_loss=best[1] if best else _number(summary.status.best_val_loss),
        best_step=best[0] if best else _int(summary.status.best_step),
        final_train_loss=last_loss[1] if last_loss else None,
        median_tokens_per_sec=float(np.median(tps)) if len(tps) else None,
        duration_s=_training_seconds(columns),
        step=max([_int(summary.status.step) or 0, *steps]),
        total_steps=_int(summary.status.total_steps),
    )


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a mapping; empty when it is missing or not a YAML mapping."""
    try:
        data = yaml.safe_load((Path(run_dir) / runs.CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: {"lora_parameters": {"rank": 8}} -> {"lora_parameters.rank": 8}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


ABSENT = "(absent)"
_ALWAYS_DIFFERENT = {"run_name"}  # the launcher writes each run's folder name: the column header already says it


def config_diff(configs: Sequence[dict[str, Any]], names: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the dotted config keys whose values differ between runs, in config order."""
    flat = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f if k not in _ALWAYS_DIFFERENT))
    rows = []
    for key in keys:
        values = [_config_value(f[key]) if key in f else ABSENT for f in flat]
        if len(set(values)) > 1:
            rows.append([key, *values])
    return ["key", *names], rows


def _config_value(value: Any) -> str:
    """A config value as YAML writes it (null, true, 0.001, [a, b])."""
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with aligned columns (for the CLI)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )

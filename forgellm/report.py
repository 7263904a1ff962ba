"""`forgellm report`: a run's dashboard as files that open anywhere, with no network and no ForgeLLM.

    <out>/
      report.html           cards, health warnings, the four charts (plotly.js inline), top checkpoints, config
      loss.png              the loss chart as a picture (drawn with numpy: no kaleido, no browser)
      metrics.csv           every train and validation record, one header
      forgellm_report.json  marker: this folder was written by `forgellm report` (so it may be replaced)

The folder is written whole or not at all (`atomic.atomic_folder`). An existing folder is replaced only
when it holds the marker or is empty; any other is refused and left untouched.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from . import atomic, charts, runs
from .dashboard import DEFAULT_SMOOTHING, Dashboard, build_dashboard, read_records
from .metric_columns import MetricColumns
from .publish import png
from .runs import MetricRecord

REPORT_MARKER = "forgellm_report.json"
HTML_FILE = "report.html"
LOSS_PNG = "loss.png"
METRICS_CSV = "metrics.csv"
CSV_FIELDS = (
    "split",
    "step",
    "loss",
    "ppl",
    "lr",
    "tokens_per_sec",
    "trained_tokens",
    "peak_memory_gb",
    "epoch",
    "grad_norm",
    "val_time_s",
    "elapsed_s",
)


def export_report(run_dir: Path, out_dir: Path, smoothing: float = DEFAULT_SMOOTHING) -> list[Path]:
    """Write the run's report into `out_dir` (a new or empty folder, or an earlier report) and list its files.

    Raises:
        ForgeError: when `out_dir` exists, is not empty and was not written by `forgellm report`.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _refuse_foreign(out_dir)
    records = read_records(run_dir)
    columns = MetricColumns.from_records(records)
    board = build_dashboard(run_dir, columns, smoothing=smoothing)
    files = {
        HTML_FILE: report_html(board, _config_text(run_dir)).encode("utf-8"),
        LOSS_PNG: loss_png(columns),
        METRICS_CSV: metrics_csv(records).encode("utf-8"),
    }
    marker = {"run": str(run_dir.resolve()), "created_at": runs.now_iso(), "files": list(files)}
    files[REPORT_MARKER] = (json.dumps(marker, indent=2) + "\n").encode("utf-8")
    emptied = _is_empty_folder(out_dir)
    if emptied:
        out_dir.rmdir()  # atomic_folder creates it whole, and replaces only folders holding the marker
    try:
        with atomic.atomic_folder(out_dir, replace_marker=REPORT_MARKER) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)  # the folder is renamed into place whole: no per-file dance
    except BaseException:
        if emptied:
            out_dir.mkdir(exist_ok=True)  # leave the user's empty folder as it was
        raise
    return [out_dir / name for name in files]


def _refuse_foreign(out_dir: Path) -> None:
    """Refuse an existing folder that is neither empty nor an earlier report, before any work."""
    if not _is_empty_folder(out_dir):
        atomic.require_replaceable(out_dir, REPORT_MARKER, "choose a new or empty folder for --out")


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def metrics_csv(records: list[MetricRecord]) -> str:
    """Every record in file order as CSV: one header (`CSV_FIELDS`), empty cells where a field is not reported.

    Floats are written with `repr`, so reading the file back gives the same numbers (NaN as `nan`).
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(runs.record_to_dict(record))
    return out.getvalue()


def loss_png(columns: MetricColumns) -> bytes:
    """The loss chart as a PNG (train line, validation dots), thinned to what 720 pixels can show."""
    train = charts.downsample_extremes(*columns.train.finite("loss"))
    val = charts.downsample_extremes(*columns.val.finite("loss"))
    return png.loss_chart(_points(*train), _points(*val))


def _points(steps: np.ndarray, values: np.ndarray) -> list[tuple[float, float]]:
    return list(zip(steps.tolist(), values.tolist(), strict=True))


def _config_text(run_dir: Path) -> str:
    try:
        return (run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no readable {runs.CONFIG_FILE})"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 10px; }
.card .label { color: #666; font-size: 12px; } .card .value { font-size: 18px; margin-top: 2px; }
.warning { border-left: 4px solid #e69500; background: #fff8e6; padding: 8px 12px; margin: 8px 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 12px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 4px 10px; text-align: left; }
pre { background: #f6f6f6; padding: 12px; overflow: auto; }
"""


def report_html(board: Dashboard, config_text: str) -> str:
    """A self-contained HTML page of the dashboard: plotly.js is embedded once, inline."""
    figures = (board.loss, board.perplexity, board.learning_rate, board.throughput)
    charts_html = "".join(
        f"<div>{fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={'displaylogo': False})}</div>"
        for i, fig in enumerate(figures)
    )
    name = html.escape(board.run_dir.name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: ForgeLLM run report</title>
<style>{_STYLE}</style></head>
<body>
<h1>{name}</h1>
<p>Run folder {html.escape(str(board.run_dir))}, report written {html.escape(runs.now_iso())} by ForgeLLM.</p>
{_cards_html(board)}
<h2>Health</h2>
{_warnings_html(board)}
<h2>Charts</h2>
<div class="charts">{charts_html}</div>
<h2>Best checkpoints</h2>
{_checkpoints_html(board)}
<h2>Config</h2>
<pre>{html.escape(config_text)}</pre>
</body></html>
"""


def _cards_html(board: Dashboard) -> str:
    cards = "".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div></div>'
        for label, value in board.cards.as_dict().items()
    )
    return f'<div class="cards">{cards}</div>'


def _warnings_html(board: Dashboard) -> str:
    if not board.warnings:
        return "<p>No problems seen in the curves.</p>"
    return "".join(
        f'<div class="warning"><b>{html.escape(w.kind)}</b>: {html.escape(w.message)}<br>'
        f"<i>What to do:</i> {html.escape(w.recommendation)}</div>"
        for w in board.warnings
    )


def _checkpoints_html(board: Dashboard) -> str:
    if not board.checkpoints:
        return "<p>No kept checkpoint has a validation loss yet.</p>"
    rows = "".join(
        f"<tr><td>{c.step:,}</td><td>{c.val_loss:.4f}</td><td>{html.escape(str(c.path))}</td></tr>"
        for c in board.checkpoints
    )
    return f"<table><tr><th>step</th><th>val loss</th><th>folder</th></tr>{rows}</table>"

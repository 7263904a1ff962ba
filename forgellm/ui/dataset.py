"""Dataset tab: what ingestion would read under dataset/, the data report for the Training form's
config (with a length histogram), and one training row with trained and untrained tokens told apart.

The report and the sample use exactly the config the Training form describes (file + changed fields),
so what is shown here is what Start would train on. Data calls are imported lazily: building the
app must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from .. import charts, choices, forms, paths
from .common import guarded
from .training import TrainingTab

_KIND_COLORS = {"trained": "#9be39b", "context (not trained)": "#d9d9d9", "padding": "#f3c6c6"}
_KIND_LABELS = {"trained": "trained", "context": "context (not trained)", "padding": "padding"}
_FILE_HEADERS = ["path", "kind", "size (bytes)", "status", "reason"]


@dataclass
class DatasetTab:
    source: gr.Dropdown
    scan: gr.Button
    use: gr.Button
    files: gr.Dataframe
    summary: gr.Markdown
    build_report: gr.Button
    report: gr.Textbox
    lengths: gr.Plot
    split: gr.Radio
    index: gr.Number
    show: gr.Button
    sample: gr.HighlightedText
    sample_info: gr.Markdown


def build(demo: gr.Blocks, training: TrainingTab) -> DatasetTab:
    """Lay out the Dataset tab; the report and sample read the Training tab's config and form."""
    sources = choices.dataset_choices()
    with gr.Row():
        source = gr.Dropdown(
            sources, value=sources[0] if sources else None, label="folder or file under dataset/", scale=4
        )
        scan = gr.Button("Scan", scale=1)
        use = gr.Button("Use in Training form", scale=1)
    summary = gr.Markdown()
    files = gr.Dataframe(headers=_FILE_HEADERS, interactive=False, wrap=True, label="files", max_height=300)
    gr.Markdown("### Data report for the Training form's config")
    build_report = gr.Button("Build report", variant="primary")
    with gr.Row():
        report = gr.Textbox(label="report", lines=18, max_lines=18, interactive=False, elem_id="forge-report", scale=3)
        lengths = gr.Plot(label="lengths", show_label=False, scale=2)
    gr.Markdown("### A training row as the model sees it")
    with gr.Row():
        split = gr.Radio(["train", "val"], value="train", label="split")
        index = gr.Number(0, precision=0, minimum=0, label="row")
        show = gr.Button("Show row")
    sample_info = gr.Markdown()
    sample = gr.HighlightedText(label="row", color_map=_KIND_COLORS, show_legend=True, combine_adjacent=True)
    tab = DatasetTab(
        source, scan, use, files, summary, build_report, report, lengths, split, index, show, sample, sample_info
    )

    config_inputs = [training.config, *training.form()]
    scan.click(_scan, [source, training.fields["train_type"]], [files, summary])
    source.change(_scan, [source, training.fields["train_type"]], [files, summary])
    use.click(_use, source, [training.fields["data"], summary])
    build_report.click(_report, config_inputs, [report, lengths])
    show.click(_sample, [split, index, *config_inputs], [sample, sample_info])
    demo.load(_refresh_sources, source, source).then(_scan, [source, training.fields["train_type"]], [files, summary])
    return tab


def _refresh_sources(current: str | None) -> Any:
    return gr.update(choices=choices.dataset_choices(current))


def _relative(path: str) -> str:
    try:
        return Path(path).resolve().relative_to(paths.PROJECT_ROOT).as_posix()
    except ValueError:
        return path


@guarded(lambda error, *_inputs: (gr.skip(), error))
def _scan(source: str | None, train_type: str) -> tuple[Any, str]:
    """List every file under `source` with whether ingestion reads or skips it, and why."""
    from ..data import scan_files

    if not source:
        return gr.skip(), ""
    choices.require_dataset_paths(source)  # a symbolic link could lead anywhere on the machine
    entries = scan_files(source, train_type)
    rows = [[_relative(f.path), f.kind, f.size, f.status, f.reason or ""] for f in entries]
    read = sum(f.status == "read" for f in entries)
    return rows, f"{len(entries)} file(s) as {train_type}: {read} read, {len(entries) - read} skipped."


def _use(source: str | None) -> tuple[Any, str]:
    """Put the scanned folder into the Training form's `data` field."""
    if not source:
        return gr.skip(), "Pick a folder or file under dataset/ first."
    if problem := choices.dataset_path_problem(source):
        return gr.skip(), f"`{source}` cannot be used from the app: {problem}."
    return gr.update(choices=choices.dataset_choices(source), value=[source]), f"Training form data set to `{source}`."


def _prepared(choice: str, values: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """(config, tokenizer, prepared data) for the Training form as it is now (cached after the first time).

    Raises:
        ForgeError: when the data or general corpus is not a real folder or file under dataset/.
    """
    from ..data import load_tokenizer, prepare

    _path, _overrides, cfg = forms.form_config(choice, dict(zip(forms.FORM_KEYS, values, strict=True)))
    # What the config file says is checked too: this tab shows file contents, so it reads only dataset/.
    choices.require_dataset_paths(cfg.data)
    choices.require_dataset_paths(cfg.mixture.general)
    tokenizer = load_tokenizer(cfg)
    return cfg, tokenizer, prepare(cfg, tokenizer)


@guarded(lambda error, *_inputs: (error, gr.skip()))
def _report(choice: str, *values: Any) -> tuple[str, Any]:
    """The data report as text and its length histogram."""
    from ..data import format_report

    _cfg, _tok, prepared = _prepared(choice, values)
    h = prepared.report.get("lengths") or {}
    histogram = charts.length_histogram_figure(h.get("edges", []), h.get("counts", []), h.get("unit", "tokens"))
    return format_report(prepared.report), histogram


@guarded(lambda error, *_inputs: (gr.skip(), error))
def _sample(split: str, index: float | None, choice: str, *values: Any) -> tuple[Any, str]:
    """One row decoded, each piece labelled trained, context (not trained) or padding."""
    from ..data import render_example

    cfg, tokenizer, prepared = _prepared(choice, values)
    row = render_example(cfg, tokenizer, int(index or 0), split, prepared=prepared)
    pieces = [(s["text"], _KIND_LABELS.get(s["kind"], s["kind"])) for s in row["segments"]]
    info = (
        f"Row {row['index']} of {row['rows']} ({row['split']}): {row['tokens']} tokens, "
        f"{row['trained_tokens']} trained, {row['padding_tokens']} padding."
    )
    return pieces, info

"""Monitoring tab: follow a run (cards, charts, health warnings, best checkpoints, log), compare runs, act on runs.

Everything is read from the run folders through `forgellm.dashboard` (incremental metrics reading, chart
data, health checks, comparisons) and `forgellm.report` (exports). The app-wide timer calls `_show` every
2 s; it first compares a few file sizes and times with what is on screen and sends nothing when they are
unchanged. The best checkpoints' **Chat with it** / **Publish it** buttons are wired in `ui/__init__.py`,
which knows the other tabs.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import choices, dashboard, launcher, metrics_reader, paths, report, runs
from ..errors import ForgeError
from ..run_summary import run_signature, status_summary
from .common import SCROLL_LOG_JS, choices_refresh, choices_update, error_text, guarded
from .gain_section import GainSection, build_gain_section

LOG_LINES = 20  # the box shows them all, so the newest line is always in view
BEST_SHOWN = 3
METRICS = metrics_reader.MetricsCache()  # one per app process: each refresh reads only what was appended


@dataclass
class BestRow:
    text: gr.Markdown
    chat: gr.Button
    publish: gr.Button


@dataclass
class MonitoringTab:
    run: gr.Dropdown
    refresh: gr.Button
    status: gr.Markdown
    cards: gr.HTML
    warnings: gr.Markdown
    log_y: gr.Checkbox
    smoothing: gr.Slider
    loss: gr.Plot
    perplexity: gr.Plot
    learning_rate: gr.Plot
    throughput: gr.Plot
    best: list[BestRow]
    best_steps: gr.State  # the checkpoint step behind each best row (for the buttons)
    log: gr.Textbox
    seen: gr.State  # signature of what is on screen (a cache, not run state: the folder is the truth)
    compare_runs: gr.Dropdown
    compare: gr.Button
    compare_loss: gr.Plot
    compare_perplexity: gr.Plot
    compare_summary: gr.Dataframe
    compare_config: gr.Dataframe
    export: gr.Button
    export_files: gr.File
    delete_confirm: gr.Checkbox
    delete: gr.Button
    action_message: gr.Markdown
    gain: GainSection | None = None

    def outputs(self) -> list[Any]:
        """What `_show` fills, in its order."""
        best = [part for row in self.best for part in (row.text, row.chat, row.publish)]
        charts_ = [self.loss, self.perplexity, self.learning_rate, self.throughput]
        return [self.status, self.cards, self.warnings, *charts_, *best, self.best_steps, self.log, self.seen]


def build(timer: gr.Timer, demo: gr.Blocks) -> MonitoringTab:
    """Lay out the Monitoring tab and wire the run picker, the periodic refresh, compare and actions."""
    listed = choices.run_choices()
    METRICS.warm([paths.runs_dir() / name for _label, name in listed])  # the first look at a long run is instant
    with gr.Row():
        run = gr.Dropdown(listed, value=listed[0][1] if listed else None, label="run", info="Newest first.", scale=4)
        refresh = gr.Button("Refresh list", size="sm", scale=1)
    status = gr.Markdown("Pick a run to follow it.")
    cards = gr.HTML()
    warnings = gr.Markdown()
    with gr.Row():
        log_y = gr.Checkbox(False, label="log-scale loss")
        smoothing = gr.Slider(0.0, 0.99, value=dashboard.DEFAULT_SMOOTHING, step=0.01, label="smoothing (train loss)")
    with gr.Row():
        loss = gr.Plot(label="loss", show_label=False)
        perplexity = gr.Plot(label="perplexity", show_label=False)
    with gr.Row():
        learning_rate = gr.Plot(label="learning rate", show_label=False)
        throughput = gr.Plot(label="tokens/s and memory", show_label=False)
    gr.Markdown("#### Best checkpoints (lowest validation loss)")
    best = []
    for _ in range(BEST_SHOWN):
        with gr.Row():
            text = gr.Markdown(visible=False)
            chat_button = gr.Button("Chat with it", size="sm", visible=False, scale=0)
            publish_button = gr.Button("Publish it", size="sm", visible=False, scale=0)
        best.append(BestRow(text, chat_button, publish_button))
    best_steps = gr.State([])
    log = gr.Textbox(
        label=f"train.log (last {LOG_LINES} lines)",
        lines=LOG_LINES,
        max_lines=LOG_LINES,
        interactive=False,
        elem_id="forge-log",
        autoscroll=True,
    )
    seen = gr.State(None)
    compare_parts = _build_compare(listed)
    action_parts = _build_actions()
    tab = MonitoringTab(
        run, refresh, status, cards, warnings, log_y, smoothing, loss, perplexity, learning_rate, throughput,
        best, best_steps, log, seen, *compare_parts, *action_parts, build_gain_section(run),
    )  # fmt: skip

    refresh.click(_refresh_runs, run, run)
    run.change(_show_now, [run, log_y, smoothing], tab.outputs(), show_progress="hidden")
    for control in (log_y, smoothing):
        control.change(_show_now, [run, log_y, smoothing], tab.outputs(), show_progress="hidden")
    timer.tick(_show, [run, seen, log_y, smoothing], tab.outputs(), show_progress="hidden")
    log.change(None, None, None, js=SCROLL_LOG_JS)
    tab.compare.click(_compare, tab.compare_runs, [tab.compare_loss, tab.compare_perplexity, *_tables(tab)])
    tab.export.click(_export, run, [tab.export_files, tab.action_message])
    tab.delete.click(_delete, [run, tab.delete_confirm], [tab.action_message, run, tab.delete_confirm])
    demo.load(_refresh_runs, run, run).then(_show_now, [run, log_y, smoothing], tab.outputs(), show_progress="hidden")
    return tab


def _tables(tab: MonitoringTab) -> list[gr.Dataframe]:
    return [tab.compare_summary, tab.compare_config]


def _build_compare(listed: list[tuple[str, str]]) -> tuple[Any, ...]:
    with gr.Accordion("Compare runs", open=False):
        with gr.Row():
            runs_picked = gr.Dropdown(listed, value=[], multiselect=True, label="runs (two or more)", scale=4)
            compare = gr.Button("Compare", size="sm", scale=1)
        with gr.Row():
            loss = gr.Plot(label="validation loss", show_label=False)
            perplexity = gr.Plot(label="validation perplexity", show_label=False)
        summary = gr.Dataframe(headers=dashboard.SUMMARY_HEADERS, interactive=False, wrap=True, label="summary")
        config = gr.Dataframe(interactive=False, wrap=True, label="config keys that differ")
    return runs_picked, compare, loss, perplexity, summary, config


def _build_actions() -> tuple[Any, ...]:
    with gr.Accordion("Export or delete this run", open=False):
        with gr.Row():
            export = gr.Button("Export report (HTML, PNG, CSV)", size="sm")
            confirm = gr.Checkbox(False, label="yes, delete this run's folder and checkpoints")
            delete = gr.Button("Delete run", variant="stop", size="sm")
        files = gr.File(label="report files", file_count="multiple", interactive=False)
        message = gr.Markdown()
    return export, files, confirm, delete, message


def follow_run(run_name: str | None) -> Any:
    """Select `run_name` in the run list (the Training tab's current run); nothing when there is none."""
    if not run_name:
        return gr.skip()
    return choices_update(choices.run_choices(include=run_name), run_name)


def _refresh_runs(current: str | None) -> Any:
    listed = choices.run_choices()
    return choices_refresh(listed, current, listed[0][1] if listed else None)


def _show_now(run_name: str | None, log_y: bool, smoothing: float) -> list[Any]:
    return _show(run_name, None, log_y, smoothing)


def _show(run_name: str | None, seen: Any, log_y: bool = False, smoothing: float = 0.6) -> list[Any]:
    """Everything for a run; all skipped when no run is chosen or nothing changed since the last refresh."""
    count = 3 + 4 + 3 * BEST_SHOWN + 3
    if not run_name:
        return [gr.skip()] * count
    try:
        run_dir = choices.resolve_run(run_name)
        signature = (*run_signature(run_dir), bool(log_y), float(smoothing))
        if signature == seen:
            return [gr.skip()] * count
        view = dashboard.build_dashboard(run_dir, METRICS.columns(run_dir), float(smoothing), bool(log_y))
        summary = status_summary(runs.summarize(run_dir))
        log = runs.tail_log(run_dir, LOG_LINES)
    except (ForgeError, OSError) as e:  # e.g. the run folder was removed: shown in place, no toast every 2 s
        return [error_text(e), "", "", *[gr.skip()] * (count - 5), None, None]
    figures = [view.loss, view.perplexity, view.learning_rate, view.throughput]
    best = _best_rows(view.checkpoints)
    steps = [c.step for c in view.checkpoints]
    return [summary, cards_html(view.cards), warnings_markdown(view.warnings), *figures, *best, steps, log, signature]


def cards_html(cards: dashboard.Cards) -> str:
    """The headline numbers as a grid of small cards, with a progress bar for step / total."""
    items = "".join(
        f'<div class="forge-card"><div class="forge-card-label">{html.escape(label)}</div>'
        f'<div class="forge-card-value">{html.escape(value)}</div></div>'
        for label, value in cards.as_dict().items()
        if label != "progress"
    )
    percent = round(100 * max(0.0, min(1.0, cards.progress)))
    bar = (
        f'<div class="forge-progress" title="{percent}%"><div style="width:{percent}%"></div></div>'
        f'<div class="forge-card-label">{percent}% of the planned steps</div>'
    )
    return f'<div id="forge-cards">{bar}<div class="forge-cards">{items}</div></div>'


def warnings_markdown(warnings: list[dashboard.HealthWarning]) -> str:
    if not warnings:
        return "No health warnings."
    return "\n".join(f"- **{w.kind}**: {w.message} *{w.recommendation}*" for w in warnings)


def _best_rows(checkpoints: list[dashboard.RankedCheckpoint]) -> list[Any]:
    out: list[Any] = []
    for i in range(BEST_SHOWN):
        if i < len(checkpoints):
            c = checkpoints[i]
            text = f"**{i + 1}.** step {c.step:,} · validation loss {c.val_loss:.4f} · `{c.path.name}`"
            out += [gr.update(value=text, visible=True), gr.update(visible=True), gr.update(visible=True)]
        else:
            out += [gr.update(visible=False)] * 3
    return out


@guarded(lambda error, *_inputs: [None, None, None, None])
def _compare(run_names: list[str] | None) -> list[Any]:
    names = list(run_names or [])
    if len(names) < 2:
        raise ForgeError("pick two or more runs to compare", "runs", "choose them in the list above")
    result = dashboard.compare_runs([choices.resolve_run(name) for name in names], METRICS)
    summary = {"headers": dashboard.SUMMARY_HEADERS, "data": result.summary_rows()}
    rows = result.config_rows or [["(the configs are the same)", *[""] * (len(result.config_headers) - 1)]]
    return [result.loss, result.perplexity, summary, {"headers": result.config_headers, "data": rows}]


@guarded(lambda error, *_inputs: [None, error])
def _export(run_name: str | None) -> list[Any]:
    """Write the run's report into the app's reports/ folder and offer its files for download."""
    run_dir = choices.resolve_run(run_name)
    written = report.export_report(run_dir, paths.home() / "reports" / run_dir.name)
    shown = [str(p) for p in written if p.suffix in (".html", ".png", ".csv")]
    return [shown, f"Report written to `reports/{run_dir.name}/`: {', '.join(p.name for p in written)}."]


@guarded(lambda error, *_inputs: [error, gr.skip(), False])
def _delete(run_name: str | None, confirmed: bool) -> list[Any]:
    """Delete the selected run after the confirmation box is ticked; never a running one."""
    if not confirmed:
        raise ForgeError("tick the confirmation box first", "delete", "deleting removes every checkpoint of the run")
    deleted = launcher.delete_run(paths.runs_dir(), run_name or "")
    METRICS.forget(deleted)
    listed = choices.run_choices()
    return [f"Deleted **{run_name}**.", choices_update(listed, listed[0][1] if listed else None), False]

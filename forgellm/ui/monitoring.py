"""Monitoring tab: a run's status line, loss and throughput charts, the end of its log, and its gain and forgetting.

Everything is read from the run folder. The app-wide timer calls `_show` every 2 s; it first compares
a few file sizes and times with what is on screen and sends nothing when they are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import charts, choices, runs
from ..errors import ForgeError
from ..run_summary import run_signature, status_summary
from .common import SCROLL_LOG_JS, choices_update, error_text
from .gain_section import GainSection, build_gain_section

LOG_LINES = 20  # the box shows them all, so the newest line is always in view


@dataclass
class MonitoringTab:
    run: gr.Dropdown
    refresh: gr.Button
    status: gr.Markdown
    loss: gr.Plot
    throughput: gr.Plot
    log: gr.Textbox
    seen: gr.State  # signature of what is on screen (a cache, not run state: the folder is the truth)
    gain: GainSection | None = None

    def outputs(self) -> list[Any]:
        return [self.status, self.loss, self.throughput, self.log, self.seen]


def build(timer: gr.Timer, demo: gr.Blocks) -> MonitoringTab:
    """Lay out the Monitoring tab and wire the run picker and the periodic refresh."""
    listed = choices.run_choices()
    with gr.Row():
        run = gr.Dropdown(listed, value=listed[0][1] if listed else None, label="run", info="Newest first.", scale=4)
        refresh = gr.Button("Refresh list", size="sm", scale=1)
    status = gr.Markdown("Pick a run to follow it.")
    with gr.Row():
        loss = gr.Plot(label="loss", show_label=False)
        throughput = gr.Plot(label="throughput", show_label=False)
    log = gr.Textbox(
        label=f"train.log (last {LOG_LINES} lines)",
        lines=LOG_LINES,
        max_lines=LOG_LINES,
        interactive=False,
        elem_id="forge-log",
        autoscroll=True,
    )
    seen = gr.State(None)
    tab = MonitoringTab(run, refresh, status, loss, throughput, log, seen, build_gain_section(run))

    refresh.click(_refresh_runs, run, run)
    run.change(_show_now, run, tab.outputs(), show_progress="hidden")
    timer.tick(_show, [run, seen], tab.outputs(), show_progress="hidden")
    log.change(None, None, None, js=SCROLL_LOG_JS)
    demo.load(_refresh_runs, run, run).then(_show_now, run, tab.outputs(), show_progress="hidden")
    return tab


def follow_run(run_name: str | None) -> Any:
    """Select `run_name` in the run list (the Training tab's current run); nothing when there is none."""
    if not run_name:
        return gr.skip()
    return choices_update(choices.run_choices(include=run_name), run_name)


def _refresh_runs(current: str | None) -> Any:
    listed = choices.run_choices()
    return choices_update(listed, listed[0][1] if listed else None, keep=current)


def _show_now(run_name: str | None) -> list[Any]:
    return _show(run_name, None)


def _show(run_name: str | None, seen: Any) -> list[Any]:
    """Status, figures and log for a run; all skipped when no run is chosen or nothing changed."""
    skip = [gr.skip() for _ in range(5)]
    if not run_name:
        return skip
    try:
        run_dir = choices.resolve_run(run_name)
        signature = run_signature(run_dir)
        if signature == seen:
            return skip
        records = runs.read_metrics(run_dir)
        summary = status_summary(runs.summarize(run_dir))
        log = runs.tail_log(run_dir, LOG_LINES)
    except (ForgeError, OSError) as e:  # e.g. the run folder was removed: shown in place, no toast every 2 s
        return [error_text(e), gr.skip(), gr.skip(), gr.skip(), None]
    return [summary, charts.loss_figure(records), charts.throughput_figure(records), log, signature]

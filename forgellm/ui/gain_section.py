"""The gain-and-forgetting section (forgellm.gain), shown in the Monitoring tab and the Chat tab.

Bound to a run picker: it shows the run's stored result when the pick changes and measures it again on
request (the base model and every kept checkpoint, on held-out domain and general text, with probes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import charts, choices, gain, mlx_threads
from ..errors import ForgeError
from .common import error_text, guarded


@dataclass
class GainSection:
    measure: gr.Button
    findings: gr.Markdown
    table: gr.Dataframe
    figure: gr.Plot

    def outputs(self) -> list[Any]:
        return [self.findings, self.table, self.figure]


def build_gain_section(run: gr.Dropdown) -> GainSection:
    """The last gain-and-forgetting result of the run `run` names, and a button that measures it again."""
    with gr.Accordion("Gain and forgetting", open=False):
        gr.Markdown(
            "Perplexity of the base model and of each kept checkpoint on the run's held-out domain documents "
            "and on held-out general text, with knowledge probes. Takes a few forward passes per checkpoint."
        )
        measure = gr.Button("Measure gain and forgetting", size="sm")
        findings = gr.Markdown()
        table = gr.Dataframe(interactive=False, wrap=True)
        figure = gr.Plot(show_label=False)
    section = GainSection(measure, findings, table, figure)
    measure.click(_measure_gain, run, section.outputs())
    run.change(_stored_gain, run, section.outputs(), show_progress="hidden")
    return section


def _gain_outputs(report: gain.GainReport | None) -> list[Any]:
    if report is None:
        return ["Not measured yet for this run.", None, charts.gain_figure(None)]
    headers, rows = report.table()
    findings = "\n".join(f"- {line}" for line in report.findings())
    return [findings, {"headers": headers, "data": rows}, charts.gain_figure(report)]


@guarded(lambda message, *_inputs: [message, gr.skip(), gr.skip()])
def _measure_gain(run_name: str | None) -> list[Any]:
    if not run_name or run_name == choices.NO_ADAPTER:
        raise ForgeError("no run is chosen", "run", "choose a run (in Chat: an adapter) first")
    return _gain_outputs(mlx_threads.call(gain.measure_gain, choices.resolve_run(run_name)))


def _stored_gain(run_name: str | None) -> list[Any]:
    if not run_name:
        return [gr.skip()] * 3
    if run_name == choices.NO_ADAPTER:  # the Chat tab's adapter picker: no run chosen
        return ["Choose an adapter run to see what its training gained and what it cost.", None, None]
    try:
        return _gain_outputs(gain.read_gain(choices.resolve_run(run_name)))
    except ForgeError as e:  # the run folder went away: said in place
        return [error_text(e), None, charts.gain_figure(None)]

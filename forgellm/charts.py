"""Plotly figures from run metrics and data reports: pure functions, no Gradio.

Figures are re-sent to the browser on every refresh, so they stay light: at most `MAX_POINTS` points
per series (train series are downsampled, keeping the first and last point). `uirevision` keeps the
user's zoom and hidden legend entries across refreshes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from .runs import MetricRecord

if TYPE_CHECKING:
    from .gain import GainReport

MAX_POINTS = 2000
_HEIGHT = 340
_LAYOUT = dict(
    margin=dict(l=50, r=20, t=40, b=40),
    legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
    uirevision="keep",  # constant: refreshing the data must not reset zoom or legend clicks
    template="plotly_white",
)


def downsample(points: Sequence[Any], max_points: int = MAX_POINTS) -> list[Any]:
    """At most `max_points` items, evenly spaced, always keeping the first and the last."""
    n = len(points)
    if n <= max_points:
        return list(points)
    if max_points < 2:
        return [points[-1]] if max_points == 1 else []
    stride = (n - 1) / (max_points - 1)
    return [points[round(i * stride)] for i in range(max_points)]


def _series(records: Iterable[MetricRecord], split: str, field: str) -> list[tuple[int, float]]:
    """(step, value) of one split's finite values, sorted by step (a resumed run may repeat steps)."""
    by_step: dict[int, float] = {}
    for r in records:
        value = getattr(r, field, None)
        if r.split != split or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        by_step[int(r.step)] = float(value)  # a later record for a step replaces an earlier one
    return sorted(by_step.items())


def _empty(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(title=title, height=_HEIGHT, xaxis=dict(visible=False), yaxis=dict(visible=False), **_LAYOUT)
    return fig


def best_validation(records: Iterable[MetricRecord]) -> tuple[int, float] | None:
    """(step, loss) of the lowest validation loss after step 0 (step 0 is the untrained baseline)."""
    val = [p for p in _series(records, "val", "loss") if p[0] > 0]
    return min(val, key=lambda p: p[1]) if val else None


def loss_figure(records: Sequence[MetricRecord]) -> go.Figure:
    """Train and validation loss against step, with the best validation point marked.

    Args:
        records: Metric records as in a run's metrics.jsonl (`step`, `split`: train|val, `loss`, ...).

    Returns:
        A figure with traces "train" (line, downsampled), "validation" (line with markers) and, when
        there is a validation point after step 0, "best validation" (one highlighted marker).
    """
    train = downsample(_series(records, "train", "loss"))
    val = _series(records, "val", "loss")
    if not train and not val:
        return _empty("Loss", "no loss reported yet")
    fig = go.Figure()
    if train:
        fig.add_trace(go.Scatter(x=[s for s, _ in train], y=[v for _, v in train], name="train", mode="lines"))
    if val:
        fig.add_trace(go.Scatter(x=[s for s, _ in val], y=[v for _, v in val], name="validation", mode="lines+markers"))
    best = best_validation(records)
    if best is not None:
        fig.add_trace(
            go.Scatter(
                x=[best[0]],
                y=[best[1]],
                name="best validation",
                mode="markers",
                marker=dict(size=14, symbol="star", color="gold", line=dict(width=1, color="black")),
                hovertemplate="best val loss %{y:.4f} at step %{x}<extra></extra>",
            )
        )
    fig.update_layout(title="Loss", xaxis_title="step", yaxis_title="loss", height=_HEIGHT, **_LAYOUT)
    return fig


def throughput_figure(records: Sequence[MetricRecord]) -> go.Figure:
    """Tokens per second (left axis) and learning rate (right axis) against step, from train records."""
    tps = downsample(_series(records, "train", "tokens_per_sec"))
    lr = downsample(_series(records, "train", "lr"))
    if not tps and not lr:
        return _empty("Throughput and learning rate", "no training report yet")
    fig = go.Figure()
    if tps:
        fig.add_trace(go.Scatter(x=[s for s, _ in tps], y=[v for _, v in tps], name="tokens/s", mode="lines"))
    if lr:
        fig.add_trace(
            go.Scatter(
                x=[s for s, _ in lr],
                y=[v for _, v in lr],
                name="learning rate",
                mode="lines",
                yaxis="y2",
                line=dict(dash="dot"),
            )
        )
    fig.update_layout(
        title="Throughput and learning rate",
        xaxis_title="step",
        height=_HEIGHT,
        yaxis=dict(title="tokens/s", rangemode="tozero"),
        yaxis2=dict(title="learning rate", overlaying="y", side="right", exponentformat="e", showgrid=False),
        **_LAYOUT,
    )
    return fig


def length_histogram_figure(edges: Sequence[int], counts: Sequence[int], unit: str = "tokens") -> go.Figure:
    """Bars of a length histogram (a data report's `lengths`): bin i covers [edges[i], edges[i+1]).

    Bins are labelled `lo-hi` as categories, so linear and log2 bins read the same way.
    """
    if not counts or len(edges) != len(counts) + 1:
        return _empty("Lengths", "no lengths to show")
    labels = [f"{lo}-{hi - 1}" if hi - 1 > lo else str(lo) for lo, hi in itertools.pairwise(edges)]
    fig = go.Figure(
        go.Bar(x=labels, y=list(counts), name="count", hovertemplate="%{x} " + unit + ": %{y}<extra></extra>")
    )
    fig.update_layout(title=f"Lengths ({unit})", xaxis_title=unit, yaxis_title="count", height=_HEIGHT, **_LAYOUT)
    fig.update_xaxes(type="category")
    return fig


def gain_figure(report: GainReport | None) -> go.Figure:
    """Domain and general perplexity of the base model and each checkpoint (`forgellm.gain`), log scale.

    A dotted line marks the general perplexity the threshold allows (base x (1 + threshold)); a star marks
    the best-balanced checkpoint.
    """
    if report is None or not report.rows:
        return _empty("Gain and forgetting", "not measured yet")
    labels = [r.label for r in report.rows]
    fig = go.Figure()
    for name, field in (("domain (validation split)", "domain"), ("general text", "general")):
        values = [getattr(r, field).perplexity for r in report.rows]
        fig.add_trace(
            go.Scatter(
                x=labels, y=values, name=name, mode="lines+markers", hovertemplate="%{x}: %{y:.3f}<extra></extra>"
            )
        )
    limit = report.rows[0].general.perplexity * (1 + report.threshold)
    fig.add_trace(
        go.Scatter(
            x=[labels[0], labels[-1]],
            y=[limit, limit],
            name=f"general limit (+{report.threshold:.0%})",
            mode="lines",
            line=dict(dash="dot", color="gray"),
            hoverinfo="skip",
        )
    )
    balanced = [r for r in report.rows if r.step is not None and r.step == report.balanced_step]
    if balanced:
        fig.add_trace(
            go.Scatter(
                x=[balanced[0].label],
                y=[balanced[0].domain.perplexity],
                name="best balance",
                mode="markers",
                marker=dict(size=14, symbol="star", color="gold", line=dict(width=1, color="black")),
                hovertemplate="best balance: %{x}<extra></extra>",
            )
        )
    fig.update_layout(title="Gain and forgetting", yaxis_title="perplexity (log)", height=_HEIGHT, **_LAYOUT)
    fig.update_yaxes(type="log")
    fig.update_xaxes(type="category")
    return fig

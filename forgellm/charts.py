"""Plotly figures from run metrics and data reports: pure functions, no Gradio.

Figures are re-sent to the browser on every refresh, so they stay light: at most `MAX_POINTS` points
per trace. Long series are cut into buckets and each bucket keeps its lowest and highest point, with the
first and the last point of the series, so a spike or the best loss is never dropped from the picture.
`uirevision` keeps the user's zoom and hidden legend entries across refreshes. Legends sit below the
plot, where they cannot cover the title however many traces there are.

Metric figures take records as `runs.read_metrics` returns them, or `MetricColumns` (what the
dashboard keeps between refreshes, so a refresh does not rebuild arrays from 100,000 records).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from .metric_columns import MetricColumns, as_columns
from .runs import MetricRecord

if TYPE_CHECKING:
    from .gain import GainReport

Metrics = Sequence[MetricRecord] | MetricColumns

MAX_POINTS = 1000
NO_DATA = "no data yet"
MAX_SMOOTHING = 0.99
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
_HEIGHT = 360


def _light_template() -> go.layout.Template:
    """The parts of plotly's "plotly_white" these figures use.

    Setting the whole template copies and validates it in every figure (about 15 ms each, most of a
    refresh); this subset looks the same on line and bar charts at about a quarter of the cost.
    """
    white = pio.templates["plotly_white"]
    layout = white.layout.to_plotly_json()
    used = ("autotypenumbers", "colorway", "font", "hovermode", "hoverlabel", "paper_bgcolor", "plot_bgcolor")
    used += ("xaxis", "yaxis", "title", "annotationdefaults", "shapedefaults")
    return go.layout.Template(
        layout={key: layout[key] for key in used if key in layout},
        data={"scatter": white.data.scatter, "bar": white.data.bar},
    )


_LAYOUT = dict(
    margin=dict(l=60, r=20, t=50, b=90),
    # Below the x axis title: a legend above the plot collides with the title once it wraps.
    legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0),
    uirevision="keep",  # constant: refreshing the data must not reset zoom or legend clicks
    template=_light_template(),
)
_BEST_MARKER = dict(size=14, symbol="star", color="gold", line=dict(width=1, color="black"))


def downsample(points: Sequence[Any], max_points: int = MAX_POINTS) -> list[Any]:
    """At most `max_points` items, evenly spaced, always keeping the first and the last."""
    n = len(points)
    if n <= max_points:
        return list(points)
    if max_points < 2:
        return [points[-1]] if max_points == 1 else []
    stride = (n - 1) / (max_points - 1)
    return [points[round(i * stride)] for i in range(max_points)]


def downsample_extremes(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points of a line: the first, the last, and each bucket's lowest and highest.

    Evenly spaced picks can skip the one point that matters (the best validation loss, a loss spike);
    keeping each bucket's extremes draws the same envelope as the full series. `y` must be finite.
    """
    n = len(x)
    if n <= max(max_points, 4):
        return x, y
    buckets = max(1, (max_points - 2) // 2)
    size = (n - 2) // buckets
    inner = y[1 : n - 1]
    # Equal buckets as a 2-D view (fast argmin/argmax); the last bucket also takes the remainder.
    body = inner[: (buckets - 1) * size].reshape(buckets - 1, size)
    tail = inner[(buckets - 1) * size :]
    starts = np.arange(buckets - 1) * size
    picks = [
        starts + body.argmin(axis=1),
        starts + body.argmax(axis=1),
        np.array([(buckets - 1) * size + tail.argmin(), (buckets - 1) * size + tail.argmax()]),
    ]
    index = np.unique(np.concatenate([[0], *(p + 1 for p in picks), [n - 1]]))
    return x[index], y[index]


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with `weight` (0: none), debiased.

    `s_t = weight * s_(t-1) + (1 - weight) * x_t` from `s_0 = 0`, divided by `1 - weight**t`, so the
    first points are not pulled towards zero. Computed in blocks (`s` over a block is `weight**k` times a
    cumulative sum), which is the Python loop's result at numpy speed; the block length keeps
    `weight**-k` far from overflow.

    Raises:
        ValueError: when `weight` is outside [0, MAX_SMOOTHING].
    """
    if not 0.0 <= weight <= MAX_SMOOTHING:
        raise ValueError(f"smoothing must be between 0 and {MAX_SMOOTHING}, not {weight}")
    values = np.asarray(values, dtype=float)
    if weight == 0.0 or len(values) == 0:
        return values.copy()
    block = int(min(4096, max(1, 300 / -math.log(weight))))
    decay = weight ** np.arange(1, min(block, len(values)) + 1)  # the same powers serve every block
    ema = np.empty(len(values))
    state = 0.0
    for start in range(0, len(values), block):
        chunk = values[start : start + block]
        powers = decay[: len(chunk)]
        ema[start : start + len(chunk)] = powers * (state + (1 - weight) * np.cumsum(chunk / powers))
        state = ema[start + len(chunk) - 1]
    # Debiasing: 1 - weight**t is exactly 1.0 in floating point after a few dozen points.
    biased = min(len(values), int(40 / -math.log(weight)) + 1)
    ema[:biased] /= 1 - weight ** np.arange(1, biased + 1)
    return ema


def _line(x: np.ndarray, y: np.ndarray, name: str, **style: Any) -> go.Scatter:
    """A downsampled line trace (lines only, unless `style` says otherwise)."""
    x, y = downsample_extremes(x, y)
    return go.Scatter(x=x, y=y, name=name, **{"mode": "lines", **style})


def _empty(title: str, message: str = NO_DATA) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(title=title, height=_HEIGHT, xaxis=dict(visible=False), yaxis=dict(visible=False), **_LAYOUT)
    return fig


def best_validation(records: Metrics) -> tuple[int, float] | None:
    """(step, loss) of the lowest validation loss after step 0 (step 0 is the untrained baseline)."""
    steps, losses = as_columns(records).val.finite("loss")
    after_baseline = steps > 0
    if not after_baseline.any():
        return None
    steps, losses = steps[after_baseline], losses[after_baseline]
    best = int(np.argmin(losses))  # the first of equal lows: the earliest checkpoint that reached it
    return int(steps[best]), float(losses[best])


def smoothed_train_loss(records: Metrics, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """(steps, loss) of the finite training losses, smoothed with `smoothing` (see `smooth`)."""
    steps, losses = as_columns(records).train.finite("loss")
    return steps, smooth(losses, smoothing)


def loss_figure(records: Metrics, smoothing: float = 0.0, log_y: bool = False) -> go.Figure:
    """Train and validation loss against step, with the best validation point marked.

    Args:
        records: Metric records as in a run's metrics.jsonl, or their `MetricColumns`.
        smoothing: TensorBoard-style smoothing of the training loss, 0 (none) to 0.99.
        log_y: A logarithmic loss axis.

    Returns:
        A figure with traces "train" (the reported losses; faint when smoothed), "train (smoothed)"
        (only when `smoothing` > 0), "validation" (line with markers) and, when there is a validation
        point after step 0, "best validation" (one highlighted marker). "no data yet" without a loss.
    """
    columns = as_columns(records)
    steps, losses = columns.train.finite("loss")
    val_steps, val_losses = columns.val.finite("loss")
    if not len(steps) and not len(val_steps):
        return _empty("Loss")
    fig = go.Figure()
    if len(steps):
        faint = smoothing > 0
        fig.add_trace(
            _line(
                steps,
                losses,
                "train",
                line=dict(color=TRAIN_COLOR, width=1 if faint else 2),
                opacity=0.3 if faint else 1,
            )
        )
        if faint:
            fig.add_trace(_line(steps, smooth(losses, smoothing), "train (smoothed)", line=dict(color=TRAIN_COLOR)))
    if len(val_steps):
        fig.add_trace(_line(val_steps, val_losses, "validation", mode="lines+markers", line=dict(color=VAL_COLOR)))
    best = best_validation(columns)
    if best is not None:
        fig.add_trace(
            go.Scatter(
                x=[best[0]],
                y=[best[1]],
                name="best validation",
                mode="markers",
                marker=_BEST_MARKER,
                hovertemplate="best val loss %{y:.4f} at step %{x}<extra></extra>",
            )
        )
    fig.update_layout(title="Loss", xaxis_title="step", yaxis_title="loss", height=_HEIGHT, **_LAYOUT)
    if log_y:
        fig.update_yaxes(type="log", title="loss (log)")
    return fig


def perplexity_figure(records: Metrics, smoothing: float = 0.0, log_y: bool = True) -> go.Figure:
    """Perplexity (exp of the loss) against step: validation, and training (smoothed when `smoothing` > 0).

    A logarithmic axis by default: perplexity falls by orders of magnitude early in a run.
    """
    columns = as_columns(records)
    steps, losses = smoothed_train_loss(columns, smoothing)
    val_steps, val_losses = columns.val.finite("loss")
    if not len(steps) and not len(val_steps):
        return _empty("Perplexity")
    fig = go.Figure()
    train_name = "train (smoothed)" if smoothing > 0 else "train"
    for x, loss, name, style in (
        (steps, losses, train_name, dict(line=dict(color=TRAIN_COLOR))),
        (val_steps, val_losses, "validation", dict(mode="lines+markers", line=dict(color=VAL_COLOR))),
    ):
        x, ppl = _finite(x, _exp(loss))
        if len(x):
            fig.add_trace(_line(x, ppl, name, **style))
    fig.update_layout(title="Perplexity", xaxis_title="step", yaxis_title="perplexity", height=_HEIGHT, **_LAYOUT)
    if log_y:
        fig.update_yaxes(type="log", title="perplexity (log)")
    return fig


def _exp(losses: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # a diverged loss overflows to inf, and is then left out
        return np.exp(losses)


def _finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(y)
    return x[keep], y[keep]


def learning_rate_figure(records: Metrics) -> go.Figure:
    """The learning rate of each training report against step (warmup and schedule at a glance)."""
    steps, lr = as_columns(records).train.finite("lr")
    if not len(steps):
        return _empty("Learning rate")
    fig = go.Figure(_line(steps, lr, "learning rate", line=dict(color="#2ca02c")))
    fig.update_layout(title="Learning rate", xaxis_title="step", height=_HEIGHT, **_LAYOUT)
    fig.update_yaxes(title="learning rate", exponentformat="e", rangemode="tozero")
    return fig


def throughput_memory_figure(records: Metrics) -> go.Figure:
    """Tokens per second (left axis) and peak memory in GB (right axis) against step."""
    train = as_columns(records).train
    tps_steps, tps = train.finite("tokens_per_sec")
    mem_steps, mem = train.finite("peak_memory_gb")
    if not len(tps_steps) and not len(mem_steps):
        return _empty("Throughput and memory")
    fig = go.Figure()
    if len(tps_steps):
        fig.add_trace(_line(tps_steps, tps, "tokens/s", line=dict(color="#9467bd")))
    if len(mem_steps):
        fig.add_trace(_line(mem_steps, mem, "peak memory (GB)", yaxis="y2", line=dict(color="#8c564b", dash="dot")))
    fig.update_layout(
        title="Throughput and memory",
        xaxis_title="step",
        height=_HEIGHT,
        yaxis=dict(title="tokens/s", rangemode="tozero"),
        yaxis2=dict(title="peak memory (GB)", overlaying="y", side="right", rangemode="tozero", showgrid=False),
        **{**_LAYOUT, "margin": dict(_LAYOUT["margin"], r=60)},
    )
    return fig


def overlay_figure(
    title: str, y_title: str, series: Sequence[tuple[str, np.ndarray, np.ndarray]], log_y: bool = False
) -> go.Figure:
    """One line per (name, steps, values), e.g. the validation loss of several runs; non-finite values left out."""
    fig = go.Figure()
    for name, x, y in series:
        x, y = _finite(np.asarray(x), np.asarray(y, dtype=float))
        if len(x):
            fig.add_trace(_line(x, y, name, mode="lines+markers"))
    if not fig.data:
        return _empty(title)
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=y_title, height=_HEIGHT, **_LAYOUT)
    if log_y:
        fig.update_yaxes(type="log", title=f"{y_title} (log)")
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

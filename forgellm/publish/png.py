"""A loss chart as a PNG file, drawn with numpy and encoded with zlib: no plotting backend needed.

Plotly's PNG export needs kaleido (a browser), which ForgeLLM does not install, and a model card needs
only one picture. So this draws it: a white canvas, a light grid at round values, axes with numeric
tick labels (a built-in 3x5 pixel font: digits, point and minus), the training loss as a line and
validation losses as dots joined by a thin line. Words (axis titles, legend) go in the card text beside the image.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

WIDTH, HEIGHT = 720, 400
TRAIN_COLOR = (31, 119, 180)  # blue: the training-loss line
VAL_COLOR = (255, 127, 14)  # orange: validation-loss dots
_BACKGROUND = (255, 255, 255)
_GRID = (232, 232, 232)
_AXIS = (90, 90, 90)
_TEXT = (60, 60, 60)
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 18, 14, 34  # margins around the plot area, in pixels
_SCALE = 2  # each font pixel is 2x2 screen pixels

# 3x5 glyphs, one string of three 0/1 columns per row.
_FONT = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"),
    "-": ("000", "000", "111", "000", "000"),
}

Point = tuple[float, float]


def encode_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an (height, width, 3) uint8 array."""
    height, width, _ = rgb.shape
    raw = np.zeros((height, width * 3 + 1), dtype=np.uint8)  # each row starts with filter type 0 (none)
    raw[:, 1:] = rgb.reshape(height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)),
            _chunk(b"IEND", b""),
        ]
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def nice_ticks(lo: float, hi: float, target: int = 5, min_step: float = 0.0) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart, at least `min_step`) in [lo, hi], about `target`."""
    if hi <= lo:
        return [lo]
    raw = max((hi - lo) / target, min_step)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 12) for i in range(count)]


def _label(value: float, ticks: Sequence[float]) -> str:
    """A tick label with just enough decimals to tell neighbouring ticks apart."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{value:.{decimals}f}"


class _Canvas:
    def __init__(self, width: int, height: int):
        self.rgb = np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)

    def fill(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        """Fill the rectangle [x0, x1) x [y0, y1), clipped to the canvas."""
        h, w, _ = self.rgb.shape
        self.rgb[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)] = color

    def polyline(self, xs: np.ndarray, ys: np.ndarray, color: tuple[int, int, int], width: int = 2) -> None:
        """Straight segments through the points, `width` pixels thick (dense samples along each segment)."""
        for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
            n = int(max(abs(x1 - x0), abs(y1 - y0))) + 2
            self._dots(np.linspace(x0, x1, n), np.linspace(y0, y1, n), color, width)
        if len(xs) == 1:
            self._dots(xs, ys, color, width)

    def _dots(self, xs: np.ndarray, ys: np.ndarray, color: tuple[int, int, int], width: int) -> None:
        h, w, _ = self.rgb.shape
        offsets = np.arange(width) - (width - 1) // 2
        for dy in offsets:
            for dx in offsets:
                cx = np.clip(np.round(xs).astype(int) + dx, 0, w - 1)
                cy = np.clip(np.round(ys).astype(int) + dy, 0, h - 1)
                self.rgb[cy, cx] = color

    def disc(self, x: float, y: float, radius: int, color: tuple[int, int, int]) -> None:
        h, w, _ = self.rgb.shape
        x0, y0 = max(0, int(x) - radius), max(0, int(y) - radius)
        yy, xx = np.ogrid[y0 : min(h, int(y) + radius + 2), x0 : min(w, int(x) + radius + 2)]
        inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
        self.rgb[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]][inside] = color

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = _TEXT) -> None:
        """Draw `text` with its top-left corner at (x, y); characters without a glyph are left blank."""
        for i, char in enumerate(text):
            for row, bits in enumerate(_FONT.get(char, ())):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        left, top = x + (4 * i + col) * _SCALE, y + row * _SCALE
                        self.fill(left, top, left + _SCALE, top + _SCALE, color)


def text_width(text: str) -> int:
    return (4 * len(text) - 1) * _SCALE


def loss_chart(train: Sequence[Point], val: Sequence[Point], width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """The PNG of a loss chart: `train` (step, loss) as a blue line, `val` (step, loss) as orange dots.

    Validation dots are joined by a thin orange line; a single training point is drawn as a blue dot.

    Non-finite losses (a diverged run) are left out. With no point at all the chart is an empty grid.

    Args:
        train: Training-loss points, in step order.
        val: Validation-loss points, in step order.
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        The bytes of an 8-bit RGB PNG file.
    """
    train = [(float(s), float(v)) for s, v in train if math.isfinite(v)]
    val = [(float(s), float(v)) for s, v in val if math.isfinite(v)]
    points = train + val
    steps = [s for s, _ in points] or [0.0, 1.0]
    losses = [v for _, v in points] or [0.0, 1.0]
    x_lo, x_hi = min(steps), max(steps)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pad = (max(losses) - min(losses)) * 0.05 or 0.5
    y_lo, y_hi = min(losses) - pad, max(losses) + pad

    canvas = _Canvas(width, height)
    left, right, top, bottom = _LEFT, width - _RIGHT, _TOP, height - _BOTTOM

    def px(step: float) -> float:  # inset a little, so points on the first and last step are not cut
        return left + 8 + (step - x_lo) / (x_hi - x_lo) * (right - left - 16)

    def py(loss: float) -> float:
        return bottom - (loss - y_lo) / (y_hi - y_lo) * (bottom - top)

    _grid(canvas, nice_ticks(x_lo, x_hi, min_step=1), nice_ticks(y_lo, y_hi), px, py, (left, right, top, bottom))
    if len(val) > 1:
        canvas.polyline(np.array([px(s) for s, _ in val]), np.array([py(v) for _, v in val]), VAL_COLOR, width=1)
    if len(train) > 1:
        canvas.polyline(np.array([px(s) for s, _ in train]), np.array([py(v) for _, v in train]), TRAIN_COLOR)
    elif train:  # one report only: a dot, as a line of one point would be invisible
        canvas.disc(px(train[0][0]), py(train[0][1]), 3, TRAIN_COLOR)
    for step, loss in val:
        canvas.disc(px(step), py(loss), 4, VAL_COLOR)
    return encode_png(canvas.rgb)


def _grid(canvas: _Canvas, x_ticks, y_ticks, px, py, box: tuple[int, int, int, int]) -> None:
    """Light grid lines at the ticks, the two axes, and the tick labels."""
    left, right, top, bottom = box
    glyph_height = 5 * _SCALE
    for tick in y_ticks:
        y = round(py(tick))
        canvas.fill(left, y, right, y + 1, _GRID)
        label = _label(tick, y_ticks)
        canvas.text(left - 8 - text_width(label), y - glyph_height // 2, label)
    for tick in x_ticks:
        x = round(px(tick))
        canvas.fill(x, top, x + 1, bottom, _GRID)
        label = _label(tick, x_ticks)
        canvas.text(x - text_width(label) // 2, bottom + 8, label)
    canvas.fill(left, top, left + 1, bottom + 1, _AXIS)
    canvas.fill(left, bottom, right, bottom + 1, _AXIS)

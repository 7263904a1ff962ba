"""Packing tokens into fixed-length rows of max_seq_length + 1.

CPT: documents are concatenated and cut into windows with stride L, so every token after the first is a
target exactly once and only the final remainder (< L tokens) is left out. The rows are written to a
.npy file as they fill, so a corpus of any size needs only a small buffer.

IFT: whole examples are placed best-fit-decreasing into rows; an example is never split across rows
and the gaps are padding with mask 0.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Tokens buffered before windows are written: ~4 MB, whatever max_seq_length is.
FLUSH_TOKENS = 1 << 20


def cpt_rows(total_tokens: int, seq_len: int) -> int:
    """Windows of seq_len + 1 tokens at stride seq_len that fit in a stream of `total_tokens`."""
    return max(0, (total_tokens - 1) // seq_len)


def write_npy_header(f, shape: tuple[int, ...], dtype: np.dtype) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)


class WindowWriter:
    """Streams tokens into overlapping windows written straight to a .npy file.

    Args:
        path: Destination .npy file (int32, shape (rows, seq_len + 1)).
        total_tokens: Length of the whole stream, known in advance from document lengths.
        seq_len: max_seq_length (L).
    """

    def __init__(self, path: Path, total_tokens: int, seq_len: int):
        self.seq_len = seq_len
        self.rows = cpt_rows(total_tokens, seq_len)
        self.written = 0
        self.pending: list[np.ndarray] = []
        self.pending_len = 0
        self.file = open(path, "wb")
        write_npy_header(self.file, (self.rows, seq_len + 1), np.int32)

    def feed(self, tokens: np.ndarray) -> None:
        """Append tokens to the stream, writing every window that is now complete."""
        if self.written >= self.rows or not len(tokens):
            return
        self.pending.append(tokens)
        self.pending_len += len(tokens)
        if self.pending_len > max(FLUSH_TOKENS, self.seq_len + 1):
            self._flush()

    def _flush(self) -> None:
        L = self.seq_len
        buf = np.concatenate(self.pending)
        n = min((len(buf) - 1) // L, self.rows - self.written)
        if n > 0:
            rows = np.empty((n, L + 1), dtype=np.int32)
            rows[:, :L] = buf[: n * L].reshape(n, L)
            rows[:, L] = buf[L : n * L + 1 : L]
            self.file.write(rows.tobytes())
            self.written += n
        tail = buf[n * L :]  # the last token of a window is the first of the next
        self.pending, self.pending_len = [tail], len(tail)

    def close(self) -> None:
        """Write what remains; the final partial window (the remainder) is dropped."""
        self._flush()
        self.file.close()
        if self.written != self.rows:
            raise RuntimeError(f"window writer got {self.written} of {self.rows} rows")  # a bug, not bad input


@dataclass
class Segments:
    """Pieces of token files in stream order: source index, start offset and length (in tokens)."""

    source: np.ndarray
    start: np.ndarray
    length: np.ndarray

    @property
    def total(self) -> int:
        return int(self.length.sum())

    def permuted(self, order: np.ndarray) -> Segments:
        return Segments(self.source[order], self.start[order], self.length[order])

    @staticmethod
    def concat(parts: list[Segments]) -> Segments:
        return Segments(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("source", "start", "length")))


def in_rows_per_source(segs: Segments, seq_len: int, n_sources: int) -> np.ndarray:
    """Tokens of each source that land in a window: stream positions 0 .. rows * L (the rest is remainder)."""
    end = segs.length.cumsum()
    begin = end - segs.length
    last = cpt_rows(segs.total, seq_len) * seq_len + 1 if cpt_rows(segs.total, seq_len) else 0
    inside = np.clip(np.minimum(end, last) - begin, 0, None)
    return np.bincount(segs.source, weights=inside, minlength=n_sources).astype(np.int64)


def write_windows(path: Path, segs: Segments, token_files: list[Path], seq_len: int) -> int:
    """Copy segments from the token files, in order, into CPT windows at `path`; returns the row count."""
    writer = WindowWriter(path, segs.total, seq_len)
    fds = [os.open(p, os.O_RDONLY) for p in token_files]
    try:
        for src, start, length in zip(segs.source.tolist(), segs.start.tolist(), segs.length.tolist(), strict=True):
            if writer.written >= writer.rows:
                break
            data = os.pread(fds[src], length * 4, start * 4)
            writer.feed(np.frombuffer(data, dtype=np.int32))
        writer.close()
    finally:
        for fd in fds:
            os.close(fd)
        writer.file.close()
    return writer.rows


# ------------------------------------------------------------------------------------------------
# IFT


@dataclass
class Packed:
    """Packed IFT rows: tokens, per-position mask (0 = not trained) and used length per row."""

    tokens: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray

    @property
    def padding(self) -> int:
        return int(self.tokens.size - self.lengths.sum())


def best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Assign items to bins of `capacity`, longest first, each into the fullest bin it fits.

    Returns:
        Bins as lists of item indices (every length must be <= capacity).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            remaining, b = free.pop(at)
        else:
            remaining, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if remaining - n > 0:
            bisect.insort(free, (remaining - n, b))
    return bins


def pack_examples(examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int) -> Packed:
    """Pack (tokens, mask) examples whole into rows of seq_len + 1, padding the rest with mask 0.

    The first token of each example gets mask 0: predicting it from the previous example is noise.
    """
    width = seq_len + 1
    bins = best_fit([len(t) for t, _ in examples], width)
    tokens = np.full((len(bins), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(bins), width), dtype=np.uint8)
    lengths = np.zeros(len(bins), dtype=np.int32)
    for row, members in enumerate(bins):
        at = 0
        for i in members:
            ids, m = examples[i]
            tokens[row, at : at + len(ids)] = ids
            mask[row, at : at + len(ids)] = m
            mask[row, at] = 0
            at += len(ids)
        lengths[row] = at
    return Packed(tokens, mask, lengths)

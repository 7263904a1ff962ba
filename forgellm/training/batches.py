"""Which training rows form each batch: a seeded, resumable stream over epochs.

The stream is one integer, `position` (rows handed out so far across all ranks). Epoch `e` visits the
rows in the order `permutation(seed + e)`, so any position maps to the same rows on a resume, and a
batch that runs past the end of an epoch continues into the next one: no row is ever skipped.
"""

from __future__ import annotations

import numpy as np


class BatchStream:
    def __init__(self, n_rows: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n_rows = n_rows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.position = 0
        self._cached_epoch = -1
        self._order = np.arange(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            self._order = np.random.default_rng(self.seed + epoch).permutation(self.n_rows)
            self._cached_epoch = epoch
        return self._order

    def next_global(self) -> np.ndarray:
        """Row indices of the whole next global batch (every rank's share, in rank-interleaved order)."""
        positions = np.arange(self.position, self.position + self.batch_size)
        self.position += self.batch_size
        rows = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(positions // self.n_rows):
            sel = positions // self.n_rows == epoch
            rows[sel] = self._epoch_order(int(epoch))[positions[sel] % self.n_rows]
        return rows

    def share(self, global_rows: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch."""
        return global_rows[self.rank :: self.world_size]

    def next(self) -> np.ndarray:
        """Row indices of this rank's share of the next global batch."""
        return self.share(self.next_global())

    def epoch_progress(self) -> float:
        """Epochs completed so far, fractional."""
        return self.position / self.n_rows

"""The batch stream: every row once per epoch, resumable from one integer, split across ranks."""

from __future__ import annotations

import numpy as np

from forgellm.training.batches import BatchStream


def test_each_epoch_visits_every_row_once() -> None:
    stream = BatchStream(n_rows=10, batch_size=4, seed=3)
    seen = np.concatenate([stream.next() for _ in range(5)])  # 20 rows = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert stream.epoch_progress() == 2.0


def test_resume_from_position_gives_the_same_batches() -> None:
    a = BatchStream(13, 4, seed=1)
    for _ in range(3):
        a.next()
    b = BatchStream(13, 4, seed=1)
    b.position = a.position
    assert all((a.next() == b.next()).all() for _ in range(6))


def test_ranks_split_the_global_batch() -> None:
    full = BatchStream(16, 4, seed=0).next()
    parts = [BatchStream(16, 4, seed=0, rank=r, world_size=2).next() for r in range(2)]
    assert sorted(np.concatenate(parts)) == sorted(full)

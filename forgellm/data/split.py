"""The train/validation split rule shared by CPT documents and IFT examples."""

from __future__ import annotations

import math

import numpy as np


def rank(digests: np.ndarray, seed: int) -> np.ndarray:
    """Order documents by a seeded hash of their content (splitmix64 of the content digest).

    The same documents go to validation run after run, and adding documents leaves the relative order
    of the others unchanged, so validation membership changes only at the boundary (shuffling by
    position would reshuffle everything).
    """
    x = digests ^ np.uint64((seed * 0x9E3779B97F4A7C15) % (1 << 64))
    with np.errstate(over="ignore"):  # splitmix64 finaliser: wrap-around multiplication is intended
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return np.argsort(x, kind="stable")


def val_count(documents: int, val_fraction: float) -> int:
    """Validation documents: val_fraction of them, rounded up so a small corpus still gets one."""
    return math.ceil(round(documents * val_fraction, 6))

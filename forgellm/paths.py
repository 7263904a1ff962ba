"""Where ForgeLLM keeps built models, runs and caches.

Everything lives under one home folder: the checkout itself by default (so a clone is self-contained),
or `FORGELLM_HOME` when set (tests point it at a temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The folder holding `models/`, `runs/` and `.cache/`."""
    return Path(os.environ.get("FORGELLM_HOME", PROJECT_ROOT)).resolve()


def models_dir() -> Path:
    """Built-in models (tiny, SmolLM2) are built here on first use."""
    return home() / "models"


def runs_dir() -> Path:
    """Default parent of run folders (`output_dir` in a config overrides it)."""
    return home() / "runs"


def cache_dir() -> Path:
    """Tokenized-data cache and other derived files that can always be rebuilt."""
    return home() / ".cache"


def dataset_dir() -> Path:
    """The sample corpus shipped with the project."""
    return PROJECT_ROOT / "dataset"

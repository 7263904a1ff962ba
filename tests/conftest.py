"""Shared fixtures: an isolated FORGELLM_HOME per test session and the tiny model built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import forgellm  # noqa: F401 - loads OpenBLAS before any test module imports mlx (see forgellm.platform)

# Data fixtures (tokenizers, corpora) shared by the tests/test_data_*.py modules.
pytest_plugins = ("conftest_data",)

# Quiet, offline, deterministic: set before anything imports gradio or huggingface_hub.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session", autouse=True)
def forgellm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models, runs and caches of the whole test session live in one temporary folder."""
    home = tmp_path_factory.mktemp("forgellm_home")
    os.environ["FORGELLM_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_model(forgellm_home: Path) -> Path:
    from forgellm.models.registry import ensure_builtin

    return ensure_builtin("tiny")

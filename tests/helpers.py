"""Helpers shared by tests (imported as `from helpers import ...`; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, timeout: float = 300, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m forgellm ...` as a real subprocess (this environment plus `env`, project on the path)."""
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "forgellm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=PROJECT_ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"forgellm {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc

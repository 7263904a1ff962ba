"""BLAS selection: every MLX process ForgeLLM starts gets OpenBLAS on Linux, with a fallback that warns."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import PROJECT_ROOT, run_cli

PROBE = (
    "import json, forgellm, mlx.core as mx; from forgellm import platform as p; "
    "s = p.ensure_fast_blas(); mx.eval(mx.ones((4, 4)) @ mx.ones((4, 4))); "
    "print(json.dumps({'name': s.name, 'loaded': p.loaded_blas_libraries(), 'message': s.message}))"
)
linux_cpu = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="BLAS swap only applies to Linux mlx-cpu")


def probe(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@linux_cpu
def test_openblas_is_loaded_into_mlx_processes() -> None:
    result = probe()
    assert result["name"] == "openblas", result
    assert any("openblas" in path.lower() for path in result["loaded"]), result


@linux_cpu
def test_off_switch_keeps_the_reference_blas() -> None:
    result = probe(FORGELLM_BLAS="off")
    assert result["name"] == "reference"
    assert not any("openblas" in path.lower() for path in result["loaded"])


@linux_cpu
def test_a_broken_choice_falls_back_and_says_so() -> None:
    result = probe(FORGELLM_BLAS="/nonexistent/libopenblas.so.0")
    assert result["name"] == "openblas"  # the wheel or system library still loads


def test_doctor_reports_the_blas_and_its_speed() -> None:
    proc = run_cli("doctor")
    assert "blas " in proc.stdout and "matmul_1024_gflops" in proc.stdout

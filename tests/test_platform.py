"""BLAS selection: every MLX process ForgeLLM starts gets OpenBLAS on Linux, with a fallback that warns.

Every check runs a real process: a probe that imports forgellm then mlx, `python -m forgellm doctor`, and
a trainer started by the launcher (the app process is checked in tests/test_ui.py, in the test that
already serves it: `test_app_serves_and_exits_on_sigterm`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT, run_cli

from forgellm import platform

PROBE = (
    "import json, forgellm, mlx.core as mx; from forgellm import platform as p; "
    "s = p.ensure_fast_blas(); p.warn_if_slow(); mx.eval(mx.ones((4, 4)) @ mx.ones((4, 4))); "
    "print(json.dumps({'name': s.name, 'source': s.source, 'library': s.library, "
    "'loaded': p.loaded_blas_libraries(), 'message': s.message}))"
)
# The swap only happens where MLX is the Linux CPU wheel with its bundled reference BLAS.
linux_cpu = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform._mlx_uses_reference_blas()),
    reason="BLAS swap only applies to Linux mlx-cpu",
)
SYSTEM_OPENBLAS = any(os.path.exists(p) for p in platform._SYSTEM_OPENBLAS)


def probe(**env: str) -> dict:
    """Run the probe in a fresh process; its JSON result plus what it wrote to stderr."""
    full_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env}
    full_env.pop("FORGELLM_QUIET_BLAS", None)  # a parent that already warned would silence the probe
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=full_env, timeout=120)
    assert out.returncode == 0, out.stderr
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


def has_openblas(paths: list[str]) -> bool:
    """An OpenBLAS with the plain cblas names MLX calls (numpy's libscipy_openblas64_ has prefixed ones)."""
    return any(Path(p).name.startswith("libopenblas") for p in paths)


def mapped_files(pid: int) -> list[str]:
    """Files mapped into a running process (Linux)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in lines if line.split()[-1].startswith("/")})


@linux_cpu
def test_openblas_is_loaded_into_mlx_processes() -> None:
    result = probe()
    assert result["name"] == "openblas", result
    assert has_openblas(result["loaded"]), result
    assert "warning" not in result["stderr"], result["stderr"]


@linux_cpu
def test_off_switch_keeps_the_reference_blas() -> None:
    result = probe(FORGELLM_BLAS="off")
    assert result["name"] == "reference"
    assert not has_openblas(result["loaded"])
    assert "slow reference BLAS" in result["stderr"] and "unset FORGELLM_BLAS" in result["stderr"]


@linux_cpu
def test_a_broken_choice_falls_back_and_says_what_failed() -> None:
    missing = "/nonexistent/libopenblas.so.0"
    result = probe(FORGELLM_BLAS=missing)
    assert result["name"] == "openblas" and has_openblas(result["loaded"])  # the wheel or system library still loads
    (warning,) = [line for line in result["stderr"].splitlines() if "warning" in line]
    assert f"FORGELLM_BLAS={missing} cannot be loaded" in warning  # which library
    assert "No such file or directory" in warning  # the OS error
    assert "fix: point FORGELLM_BLAS at an existing libopenblas.so.0, or unset it" in warning
    assert f"using {result['source']}" in warning  # and what runs instead


@linux_cpu
def test_blas_links_live_under_forgellm_home(tmp_path: Path) -> None:
    """The symlink folder follows FORGELLM_HOME; nothing is written to ~/.cache or XDG_CACHE_HOME."""
    home, user = tmp_path / "home", tmp_path / "user"
    result = probe(FORGELLM_HOME=str(home), HOME=str(user), XDG_CACHE_HOME=str(user / "xdg"))
    assert result["name"] == "openblas" and has_openblas(result["loaded"])
    if result["source"] == "ngsolve-openblas wheel":  # the route that needs the links
        (folder,) = (home / ".cache" / "blas").iterdir()
        link = folder / "libopenblas.so.0"
        assert link.is_symlink() and Path(os.readlink(link)) == Path(result["library"])
    assert not user.exists()


def _check_cache_warning(result: dict, home: Path, error: str) -> None:
    (warning,) = [line for line in result["stderr"].splitlines() if "warning" in line]
    assert f"cannot write the OpenBLAS links folder {home / '.cache' / 'blas'}" in warning  # where
    assert f"({error})" in warning  # the OS error
    assert f"fix: make {home / '.cache'} a writable folder, or set FORGELLM_HOME to one" in warning
    if SYSTEM_OPENBLAS:  # the system library needs no links: fast, and the warning says why it was used
        assert result["name"] == "openblas" and "using system package" in warning
    else:
        assert result["name"] == "reference" and "slow reference BLAS" in warning
        assert not has_openblas(result["loaded"])


@linux_cpu
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_cache_warns_where_and_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".cache").chmod(0o555)
    try:
        result = probe(FORGELLM_HOME=str(home))
    finally:
        (home / ".cache").chmod(0o755)
    _check_cache_warning(result, home, "Permission denied")


@linux_cpu
def test_a_cache_path_that_is_not_a_folder_warns_where_and_what_to_do(tmp_path: Path) -> None:
    """The same failure as a read-only folder, in a form that also fails for root (which CI runs as)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("a file where the cache folder should be")
    _check_cache_warning(probe(FORGELLM_HOME=str(home)), home, "Not a directory")


def _gflops(stdout: str) -> float:
    return float(re.search(r"^matmul_1024_gflops\s+([\d.]+)$", stdout, re.M).group(1))


def test_doctor_reports_the_blas_and_its_speed() -> None:
    proc = run_cli("doctor")
    assert re.search(r"^blas\s+(openblas|accelerate|default)$", proc.stdout, re.M), proc.stdout
    assert _gflops(proc.stdout) > 0 and "problem" not in proc.stderr


@linux_cpu
def test_doctor_fails_on_the_reference_blas_and_says_why() -> None:
    fast = run_cli("doctor")
    slow = run_cli("doctor", check=False, env={"FORGELLM_BLAS": "off"})
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert re.search(r"^blas\s+reference$", slow.stdout, re.M)
    (problem,) = [line for line in slow.stderr.splitlines() if line.startswith("problem:")]
    assert "slow reference BLAS" in problem and "fix: unset FORGELLM_BLAS" in problem
    # The swap is real: the same matmul in the same environment is several times faster with OpenBLAS.
    assert _gflops(fast.stdout) > 3 * _gflops(slow.stdout), (fast.stdout, slow.stdout)


@linux_cpu
def test_the_trainer_started_by_the_launcher_runs_on_openblas(tiny_model: Path, tmp_path: Path) -> None:
    from forgellm import config, launcher, runs

    data = tmp_path / "docs"
    data.mkdir()
    for i in range(8):  # a small corpus of our own: the first step comes within seconds
        (data / f"{i}.txt").write_text(f"Bees keep the hive warm in winter, note {i}. " * 40)
    overrides = [f"output_dir={tmp_path}", f"data={data}", "iters=100000", "max_seq_length=64", "steps_per_report=1"]
    cfg = config.load(PROJECT_ROOT / "configs/cpt-tiny.yaml", overrides)
    launched = launcher.start_in_background(cfg)
    proc = launched.process
    try:
        deadline = time.monotonic() + 120
        while runs.read_status(launched.run_dir).step < 1:  # a step done: MLX has multiplied matrices
            assert proc.poll() is None, runs.tail_log(launched.run_dir)
            assert time.monotonic() < deadline, "trainer made no progress"
            time.sleep(0.2)
        assert runs.read_status(launched.run_dir).pid == proc.pid
        mapped = mapped_files(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the trainer and nothing else
        proc.wait(timeout=30)
    assert any("libmlx" in Path(p).name for p in mapped), mapped
    assert has_openblas(mapped), mapped

"""Fast BLAS for MLX's CPU build, and facts about the machine.

Why this exists: the Linux `mlx-cpu` wheel links a bundled *reference* BLAS, so a 1024x1024 float32
matmul runs at single-digit GFLOP/s (7.5 measured). libmlx calls plain `cblas_sgemm`, so loading an
optimized OpenBLAS into the global symbol scope *before* `mlx.core` is imported makes MLX use it: 31.7x
faster matmuls (bench/blas_bench.py, BENCHMARKS.md), with no change to MLX itself.

Where OpenBLAS comes from, in order:
1. `FORGELLM_BLAS=/path/to/libopenblas.so` (explicit choice), or `FORGELLM_BLAS=off` to keep MLX's own;
2. the `ngsolve-openblas` wheel (installed by requirements.txt on Linux x86_64; a pip-only route);
3. Debian/Ubuntu's `libopenblas0-pthread` (or any system `libopenblas.so.0`).

OpenBLAS needs `libgfortran.so.5`, which the pip wheels don't ship under that name; the mlx-cpu wheel
bundles one under a hashed name. We put symlinks with the standard names in a small folder under the
project's cache (`paths.cache_dir() / "blas"`, so it follows `FORGELLM_HOME`) and load OpenBLAS through
a symlink there, so its `$ORIGIN` rpath finds them. No environment variables, no re-exec, nothing for
the user to do. Every failed attempt (a library that will not load, a cache folder that is not
writable) is kept with its OS error and fix, and `warn_if_slow` prints it.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths

_SYSTEM_OPENBLAS = [
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
]
SLOW_BLAS_FIX = (
    "install an optimized BLAS: `pip install ngsolve-openblas` (Linux x86_64) or "
    "`sudo apt-get install libopenblas0-pthread` (Debian/Ubuntu), then restart"
)


@dataclass
class BlasState:
    """What `ensure_fast_blas` did: shown by `forgellm doctor` and the app."""

    name: str  # "accelerate", "openblas", "reference", "default"
    library: str | None = None
    source: str | None = None  # where the library came from
    message: str = ""
    problems: list[str] = field(default_factory=list)  # attempts that failed: what, the OS error, the fix
    load_path: str | None = None  # what was handed to the loader (the wheel's: a symlink that finds gfortran)

    @property
    def fast(self) -> bool:
        return self.name != "reference"


class BlasLoadError(Exception):
    """One way of loading OpenBLAS failed; says which library or folder, the OS error and the fix."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}; fix: {fix}")


_state: BlasState | None = None


def _site_dirs() -> list[Path]:
    dirs = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    dirs.update(Path(p) for p in sys.path if p.endswith("site-packages"))
    return [d for d in dirs if d.is_dir()]


def _mlx_uses_reference_blas() -> bool:
    """True where the installed MLX is the Linux CPU wheel with its bundled reference BLAS."""
    return any(glob.glob(str(d / "mlx_cpu.libs" / "libblas*.so*")) for d in _site_dirs())


def _find_wheel_openblas() -> Path | None:
    for d in _site_dirs():
        hits = sorted(glob.glob(str(d / "ngsolve_openblas" / "libopenblas*.so*")))
        if hits:
            return Path(hits[0])
    return None


def _find_gfortran() -> tuple[Path, Path | None] | None:
    """A libgfortran (and the libquadmath it needs) from wheels already installed, by hashed name."""
    for d in _site_dirs():
        for libs in ("mlx_cpu.libs", "numpy.libs", "scipy.libs"):
            fortran = sorted(glob.glob(str(d / libs / "libgfortran*.so*")))
            if fortran:
                quad = sorted(glob.glob(str(d / libs / "libquadmath*.so*")))
                return Path(fortran[0]), Path(quad[0]) if quad else None
    return None


def shim_root() -> Path:
    """Where the OpenBLAS symlink folders live: under the project's cache, so `FORGELLM_HOME` moves them."""
    return paths.cache_dir() / "blas"


def _shim_folder(openblas: Path, gfortran: Path, quadmath: Path | None) -> Path:
    """Folder of symlinks: OpenBLAS plus libgfortran.so.5 under the name OpenBLAS asks for."""
    key = hashlib.sha256(f"{openblas}|{gfortran}|{quadmath}".encode()).hexdigest()[:16]
    base = shim_root() / key
    links = {"libopenblas.so.0": openblas, "libgfortran.so.5": gfortran}
    if quadmath is not None:
        links["libquadmath.so.0"] = quadmath
        links[quadmath.name] = quadmath  # the hashed gfortran asks for its quadmath by hashed name
    base.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        link = base / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        tmp = base / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)  # atomic: a concurrent process never sees a missing link
    return base


def _load_global(path: Path) -> None:
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def _try_wheel() -> BlasState | None:
    openblas = _find_wheel_openblas()
    fortran = _find_gfortran()
    if openblas is None or fortran is None:
        return None
    try:
        shim = _shim_folder(openblas, *fortran)
    except OSError as e:
        raise BlasLoadError(
            f"cannot write the OpenBLAS links folder {e.filename or shim_root()} ({e.strerror or e})",
            f"make {paths.cache_dir()} a writable folder, or set FORGELLM_HOME to one",
        ) from e
    try:
        _load_global(shim / "libopenblas.so.0")
    except OSError as e:
        raise BlasLoadError(
            f"cannot load {openblas} from the ngsolve-openblas wheel ({e})",
            "reinstall it: `pip install --force-reinstall ngsolve-openblas`",
        ) from e
    return BlasState("openblas", str(openblas), "ngsolve-openblas wheel", load_path=str(shim / "libopenblas.so.0"))


def _try_system() -> BlasState | None:
    for candidate in _SYSTEM_OPENBLAS:
        if os.path.exists(candidate):
            try:
                _load_global(Path(candidate))
            except OSError as e:
                raise BlasLoadError(
                    f"cannot load the system OpenBLAS {candidate} ({e})",
                    "reinstall it: `sudo apt-get install --reinstall libopenblas0-pthread`",
                ) from e
            return BlasState("openblas", candidate, "system package", load_path=candidate)
    return None


def _explicit(path: str) -> BlasState:
    try:
        _load_global(Path(path))
    except OSError as e:
        raise BlasLoadError(
            f"FORGELLM_BLAS={path} cannot be loaded ({e})",
            "point FORGELLM_BLAS at an existing libopenblas.so.0, or unset it to let ForgeLLM find one",
        ) from e
    return BlasState("openblas", path, "FORGELLM_BLAS", load_path=path)


def ensure_fast_blas() -> BlasState:
    """Load an optimized BLAS into the process before MLX is imported; idempotent and never raises."""
    global _state
    if _state is not None:
        return _state
    choice = os.environ.get("FORGELLM_BLAS", "").strip()
    if sys.platform == "darwin":
        _state = BlasState("accelerate", message="macOS: MLX uses Metal and Accelerate")
    elif choice.lower() == "off":
        _state = BlasState(
            "reference",
            message="FORGELLM_BLAS=off keeps MLX's slow reference BLAS (float32 matmuls 31.7x slower); "
            "fix: unset FORGELLM_BLAS",
        )
    elif not sys.platform.startswith("linux") or not _mlx_uses_reference_blas():
        _state = BlasState("default", message="MLX's own BLAS (no reference BLAS bundled)")
    elif "mlx.core" in sys.modules:
        _state = BlasState(
            "reference",
            message="mlx.core was imported before forgellm, so MLX kept its slow reference BLAS; "
            "fix: import forgellm before mlx",
        )
    else:
        _state = _load_first_available(choice)
    return _state


def _load_first_available(choice: str) -> BlasState:
    attempts = [lambda: _explicit(choice)] if choice else []
    attempts += [_try_wheel, _try_system]
    problems: list[str] = []
    for attempt in attempts:
        try:
            state = attempt()
        except BlasLoadError as e:  # a broken library must not stop the app: fall through to the next one
            problems.append(str(e))
            continue
        if state is not None:
            state.problems = problems
            state.message = f"{state.source}: {state.library}"
            return state
    if problems:
        message = f"MLX is left on its slow reference BLAS because {'; and '.join(problems)}"
    else:
        message = f"no optimized BLAS found, so MLX is left on its slow reference BLAS; fix: {SLOW_BLAS_FIX}"
    return BlasState("reference", message=message, problems=problems)


def warn_if_slow(stream=sys.stderr) -> None:
    """Say once per launch, with the fix, when MLX runs on the reference BLAS or a chosen library failed."""
    state = ensure_fast_blas()
    if os.environ.get("FORGELLM_QUIET_BLAS"):
        return
    if not state.fast:
        warnings = [state.message]
    else:  # fast in the end, but what the user set or installed did not load
        warnings = [f"using {state.source} ({state.library}) because {problem}" for problem in state.problems]
    for warning in warnings:
        print(f"forgellm: warning: {warning}", file=stream)
    if warnings:
        os.environ["FORGELLM_QUIET_BLAS"] = "1"  # children inherit it: one warning per launch


def loaded_blas_libraries() -> list[str]:
    """BLAS libraries mapped into this process (Linux), read from /proc/self/maps."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    names = {line.split()[-1] for line in maps.read_text().splitlines() if "blas" in line.lower()}
    return sorted(n for n in names if n.startswith("/"))


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """float32 n x n matmul throughput of MLX's default device, in GFLOP/s."""
    import mlx.core as mx

    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a, b)
    for _ in range(2):
        mx.eval(a @ b)
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    elapsed = time.perf_counter() - start
    return 2 * n**3 * repeats / elapsed / 1e9


def machine_summary() -> dict[str, object]:
    """Facts for `forgellm doctor`: platform, MLX device, BLAS and its measured speed."""
    import platform

    import mlx.core as mx

    state = ensure_fast_blas()
    return {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "mlx": getattr(mx, "__version__", "?"),
        "mlx_device": str(mx.default_device()),
        "blas": state.name,
        "blas_library": state.library,
        "blas_source": state.source,
        "blas_message": state.message,
        "blas_loaded": loaded_blas_libraries(),
        "matmul_1024_gflops": round(matmul_gflops(), 1),
    }

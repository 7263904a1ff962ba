"""The app computes with MLX on a few long-lived threads (forgellm.mlx_threads), never on the thread a
request happens to arrive on: MLX keeps OS threads for every thread that ever computed."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import PROJECT_ROOT

from forgellm.mlx_threads import MlxThreads

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="counts OS threads through /proc")


def _os_threads() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def _compute() -> float:
    import mlx.core as mx

    return float((mx.ones((32, 32)) @ mx.ones((32, 32))).sum().item())


def _from_new_threads(n: int, fn) -> list:
    """`fn()` called from `n` threads, one after another, each new (as Gradio's expiring workers are)."""
    results = []
    for _ in range(n):
        caller = threading.Thread(target=lambda: results.append(fn()))
        caller.start()
        caller.join()
    return results


@needs_proc
def test_mlx_work_from_new_threads_leaves_no_os_threads_behind() -> None:
    _compute()
    before = _os_threads()
    assert _from_new_threads(12, _compute) == [32.0 * 32 * 32] * 12
    leaked = _os_threads() - before
    assert leaked >= 6, f"MLX no longer leaves threads behind ({leaked}): mlx_threads may be unneeded"

    pool = MlxThreads("test-mlx", 2)
    try:
        pool.call(_compute)
        before = _os_threads()
        assert _from_new_threads(12, lambda: pool.call(_compute)) == [32.0 * 32 * 32] * 12
        assert _os_threads() - before <= 1, f"{_os_threads() - before} more OS threads after 12 calls"
    finally:
        pool.shutdown(10)


def test_results_exceptions_and_context_reach_the_caller() -> None:
    pool = MlxThreads("test-mlx", 1)
    request = contextvars.ContextVar("request", default="none")
    request.set("the caller's")
    try:
        assert pool.call(lambda: (threading.current_thread().name, request.get())) == ("test-mlx-1", "the caller's")
        with pytest.raises(ZeroDivisionError):
            pool.call(lambda: 1 / 0)
        assert pool.call(lambda: pool.call(lambda: "nested")) == "nested"  # on the thread already: no deadlock
        assert pool.thread_count() == 1
    finally:
        pool.shutdown(10)
    assert pool.thread_count() == 0


def test_a_long_job_leaves_the_second_thread_free_and_a_third_waits_its_turn() -> None:
    pool = MlxThreads("test-mlx", 2)
    release = threading.Event()
    order: list[str] = []
    try:
        long = pool.submit(lambda: (release.wait(10), order.append("long")))
        assert pool.call(lambda: order.append("short") or "done") == "done"  # not behind the long one
        blocker = pool.submit(lambda: (release.wait(10), order.append("blocker")))
        waiting = pool.submit(lambda: order.append("third"))
        time.sleep(0.2)
        assert order == ["short"] and not waiting.done()  # both threads busy: it waits
        release.set()
        for future in (waiting, long, blocker):
            future.result(10)
        assert sorted(order) == ["blocker", "long", "short", "third"]
        assert pool.thread_count() == 2
        for _ in range(5):  # idle threads are reused, never added beyond the size
            pool.call(order.append, "again")
        assert pool.thread_count() == 2
    finally:
        release.set()
        pool.shutdown(10)


def test_a_process_that_used_the_threads_exits_cleanly(tiny_model: Path) -> None:
    """MLX aborts at exit ("terminate called") when a thread's streams outlive it: the threads end first."""
    code = (
        "import forgellm, threading\n"
        "from forgellm import inference, mlx_threads\n"
        "loaded = mlx_threads.call(inference.load_for_chat, 'tiny')\n"
        "settings = inference.GenerationSettings(max_tokens=3, temperature=0.0)\n"
        "t = threading.Thread(target=lambda: list(inference.stream(loaded, 'The queen', settings)))\n"
        "t.start(); t.join()\n"
        "print(mlx_threads.ACTIONS.thread_count(), mlx_threads.GENERATION.thread_count())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "1"]
    assert "terminate" not in proc.stderr


# ---- the app's handlers use them ----------------------------------------------------------------------


def _spy(seen: list[str], result):
    def spy(*_args, **_kwargs):
        seen.append(threading.current_thread().name)
        return result

    return spy


def _call_handler(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seen: list[str]) -> None:
    from forgellm import choices
    from forgellm.publish import workflow
    from forgellm.ui import chat, gain_section, publishing

    monkeypatch.setattr(choices, "resolve_run", lambda _name: tmp_path)
    report = SimpleNamespace(summary=lambda: "measured")
    if name == "load":
        monkeypatch.setattr(chat.chat_turn, "load_models", _spy(seen, []))
        chat._models("tiny", choices.NO_ADAPTER, None, False)
    elif name == "evaluate":
        monkeypatch.setattr(chat.evaluation, "evaluate", _spy(seen, report))
        chat._evaluate("tiny", "run", "best", chat.VALIDATION_SPLIT)
    elif name == "gain":
        monkeypatch.setattr(gain_section.gain, "measure_gain", _spy(seen, None))
        gain_section._measure_gain("run")
    elif name == "fuse":
        monkeypatch.setattr(publishing, "fuse_run", _spy(seen, tmp_path / "fused"))
        publishing._fuse("run", "best", "fused-name", False)
    elif name == "quantize":
        monkeypatch.setattr(workflow, "quantize_folder", _spy(seen, (tmp_path / "q4", report)))
        publishing._quantize("folder", 4, 64)
    elif name == "gguf":
        monkeypatch.setattr(workflow, "model_folder", lambda _folder: tmp_path)
        result = SimpleNamespace(template_layout=None, gguf="model.gguf", modelfile="Modelfile")
        monkeypatch.setattr(publishing, "export_gguf", _spy(seen, result))
        publishing._gguf("folder")


@pytest.mark.parametrize("handler", ["load", "evaluate", "gain", "fuse", "quantize", "gguf"])
def test_the_app_computes_with_mlx_on_its_own_threads(
    handler: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str] = []
    _call_handler(handler, monkeypatch, tmp_path, seen)
    assert len(seen) == 1 and seen[0].startswith("forgellm-mlx-"), seen

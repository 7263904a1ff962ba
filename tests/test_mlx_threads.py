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

from forgellm import mlx_threads
from forgellm.mlx_threads import MlxThreads

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="counts OS threads through /proc")


# Run in a process of its own: other tests' threads (Gradio's expiring workers) would move the count.
THREAD_COUNT_SCRIPT = """
import threading
import time
import forgellm
import mlx.core as mx
from forgellm import mlx_threads
from forgellm.mlx_threads import MlxThreads

def os_threads():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))

def compute():
    return float((mx.ones((32, 32)) @ mx.ones((32, 32))).sum().item())

def from_new_threads(fn):
    results = []
    for _ in range(12):
        caller = threading.Thread(target=lambda: results.append(fn()))
        caller.start()
        caller.join()
    assert results == [32.0 ** 3] * 12, results
    time.sleep(0.5)  # a joined thread's OS thread may still be exiting

compute()
before = os_threads()
from_new_threads(compute)
direct = os_threads() - before
pool = MlxThreads("test-mlx", 2)
pool.call(compute)
before = os_threads()
from_new_threads(lambda: pool.call(compute))
print(direct, os_threads() - before)
pool.shutdown(10)
"""


@needs_proc
def test_mlx_work_from_new_threads_leaves_no_os_threads_behind() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", THREAD_COUNT_SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    direct, pooled = map(int, proc.stdout.split())
    assert direct >= 6, f"MLX no longer leaves threads behind ({direct}): mlx_threads may be unneeded"
    assert pooled == 0, f"{pooled} more OS threads after 12 calls through the pool"


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
    with pytest.raises(RuntimeError, match="exiting"):  # at exit: no thread started that nothing would end
        pool.submit(print)


def test_calls_one_after_another_reuse_one_thread() -> None:
    pool = MlxThreads("test-mlx", 2)
    try:
        names = {pool.call(lambda: threading.current_thread().name) for _ in range(20)}
        assert names == {"test-mlx-1"} and pool.thread_count() == 1
    finally:
        pool.shutdown(10)


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


def test_a_generation_that_cannot_start_raises_instead_of_hanging(tiny_model: Path, monkeypatch) -> None:
    from forgellm import inference

    loaded = mlx_threads.call(inference.load_for_chat, "tiny")
    monkeypatch.setitem(sys.modules, "mlx_lm.generate", None)  # its import now fails on the generation thread
    outcome: list = []

    def reply() -> None:
        try:
            list(inference.stream(loaded, "The queen", inference.GenerationSettings(max_tokens=2)))
        except ImportError as e:
            outcome.append(e)

    caller = threading.Thread(target=reply, daemon=True)
    caller.start()
    caller.join(60)
    assert not caller.is_alive(), "the reply hung"
    assert len(outcome) == 1
    monkeypatch.undo()
    settings = inference.GenerationSettings(max_tokens=2, temperature=0.0)
    assert len(list(inference.stream(loaded, "The queen", settings))) == 2  # the next reply works


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
        monkeypatch.setattr(chat.chat_turn, "models_loaded", lambda *_args: False)  # a load to compute
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

"""The threads the app computes with MLX on: a few that live as long as the process, never one per request.

MLX (0.32) gives each thread that computes its own streams, with OS threads that outlive the Python
thread: measured, one or two per thread; after 1,900 chat replies each computed on a thread of its own,
the app had 3,800 OS threads and replied 3x slower. Gradio runs a handler on a pooled worker thread that
exits after a few idle seconds, so each click after a pause gets a new thread. So what the app computes
with MLX (a reply, loading a model, an evaluation, a fuse, a quantization) runs on one of these threads,
and the handler waits for it.

At exit each thread destroys its streams first: MLX aborts the process ("terminate called") when a
thread's streams outlive it at shutdown.
"""

from __future__ import annotations

import atexit
import contextvars
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_SHUTDOWN = object()


class MlxThreads:
    """Up to `size` long-lived threads named `<name>-<n>`, each started when a job finds the others busy.

    Jobs run in submission order with the submitter's context variables (Gradio finds a handler's
    progress bar through them).
    """

    def __init__(self, name: str, size: int):
        self.name, self.size = name, size
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._free = 0  # threads free for a job, less the jobs queued (negative: jobs wait for a thread)
        self._closed = False
        self._mine = threading.local()
        _ALL.append(self)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run `fn(*args, **kwargs)` on one of the threads; its result or exception lands in the future."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: the process is exiting; no new MLX work is started")
            self._threads = [t for t in self._threads if t.is_alive()]
            if self._free <= 0 and len(self._threads) < self.size:  # a new thread, free, takes this job
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads) + 1}", daemon=True)
                thread.start()
                self._threads.append(thread)
            else:  # a free thread takes it, or it waits its turn
                self._free -= 1
            self._jobs.put((contextvars.copy_context(), fn, args, kwargs, future))
        return future

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` computed on one of the threads (at once when already on one): its result,
        or its exception raised here."""
        if getattr(self._mine, "on", False):
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    def shutdown(self, timeout_s: float) -> None:
        """Refuse new jobs; end every thread once the jobs already queued have run, each destroying its MLX
        streams first. Waits up to `timeout_s` for each (a fuse in progress at exit may take longer)."""
        with self._lock:
            self._closed = True
            threads, self._threads, self._free = self._threads, [], 0
            for _ in threads:
                self._jobs.put(_SHUTDOWN)
        for thread in threads:
            thread.join(timeout_s)

    def thread_count(self) -> int:
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

    def _serve(self) -> None:
        self._mine.on = True
        try:
            while (job := self._jobs.get()) is not _SHUTDOWN:
                self._run(*job)
                del job  # nothing of a finished job (a model, a result) kept alive while the thread waits
        finally:
            mx = sys.modules.get("mlx.core")  # imported by the jobs that computed; none, no streams
            if mx is not None:
                mx.clear_streams()

    def _run(self, context: contextvars.Context, fn: Callable, args: tuple, kwargs: dict, future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            with self._lock:
                self._free += 1
            return
        try:
            outcome, failed = context.run(fn, *args, **kwargs), False
        except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
            outcome, failed = e, True
        with self._lock:  # free before the caller wakes: a job it submits at once finds this thread
            self._free += 1
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


_ALL: list[MlxThreads] = []

GENERATION = MlxThreads("forgellm-generate", 1)  # chat replies: one at a time (inference.stream)
ACTIONS = MlxThreads("forgellm-mlx", 2)  # loading, evaluating, fusing, quantizing: a long one leaves one free


def call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`ACTIONS.call`: what an app handler runs when it computes with MLX."""
    return ACTIONS.call(fn, *args, **kwargs)


@atexit.register
def _shutdown_all(timeout_s: float = 10.0) -> None:
    for threads in _ALL:
        threads.shutdown(timeout_s)

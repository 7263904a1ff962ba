"""Low-level process facts: is a pid alive, when did it start, what is its command line, and the
lock that lets exactly one trainer own a run folder. Nothing here imports the rest of ForgeLLM.

A pid alone does not identify a process: the system reuses pids. A trainer is identified by its pid
*and* its start time, so a recycled pid is never mistaken for it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path
from typing import IO

_HAS_PROC = Path("/proc/self/stat").exists()  # Linux; macOS answers through `ps`


def pid_alive(pid: int | None) -> bool:
    """True when `pid` names a live process (a zombie that has exited but not been reaped is not)."""
    if not pid or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return not _is_zombie(int(pid))


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux), or None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _is_zombie(pid: int) -> bool:
    fields = _proc_stat_fields(pid)
    if fields is not None:
        return fields[0] == "Z"
    if _HAS_PROC:  # it exited between the two looks: as good as a zombie
        return True
    state = _ps(pid, "stat=")
    return state.startswith("Z")


def _ps(pid: int, column: str) -> str:
    """One `ps` column for `pid` (macOS and other Unixes without /proc); empty when it cannot tell."""
    # A fixed locale and time zone: `lstart` must read the same whoever asks (trainer or another shell).
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC0"}
    try:
        out = subprocess.run(["ps", "-o", column, "-p", str(pid)], capture_output=True, text=True, timeout=5, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def process_start_time(pid: int | None) -> str | None:
    """When `pid` started, as an opaque string (clock ticks since boot on Linux, `ps lstart` elsewhere).

    Compared for equality only: the same pid with another start time is another process.
    """
    if not pid:
        return None
    fields = _proc_stat_fields(int(pid))
    if fields is not None:
        return fields[19] if len(fields) > 19 else None  # field 22 of stat: start time in clock ticks
    if _HAS_PROC:  # the pid is gone
        return None
    return _ps(int(pid), "lstart=") or None


def cmdline(pid: int) -> str:
    """The command line of `pid`, arguments joined by spaces; empty when unknown."""
    path = Path(f"/proc/{pid}/cmdline")
    if path.exists():
        try:
            return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    return _ps(pid, "command=")


def same_process(pid: int | None, start_time: str | None) -> bool:
    """True only when `pid` is alive and started at `start_time` (an unknown start time never matches)."""
    if not pid or not start_time or not pid_alive(pid):
        return False
    return process_start_time(pid) == start_time


class LockHeld(Exception):
    """The lock belongs to another live process."""


class FolderLock:
    """An exclusive, non-blocking `flock` on a file: held for the life of the process that took it.

    The kernel releases it when the process exits in any way (kill -9 included), so a crashed trainer
    never leaves a stale lock behind.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file: IO[bytes] | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise LockHeld at once (never waits)."""
        handle = open(self.path, "a+b")  # noqa: SIM115 - kept open for as long as the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            handle.close()
            raise LockHeld(str(self.path)) from e
        handle.truncate(0)  # then record who holds it, for the message another process shows
        handle.write(str(os.getpid()).encode())
        handle.flush()
        self._file = handle
        return self

    def holder(self) -> int | None:
        """The pid the current holder wrote into the lock file (None when unknown)."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()

"""Atomic writes: a file or folder is either whole or absent, never half-written.

Every write goes to a temporary sibling first and is renamed into place (rename is atomic on one
filesystem), so a crash, a kill -9 or a full disk never leaves a truncated status file or a
checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename).

    The file gets the permissions a plain `open()` would give (0666 less the umask), not mkstemp's 0600:
    a model card or config a user shares or uploads must be readable like any other file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically; see `write_bytes`."""
    write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    umask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return umask


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def require_replaceable(folder: Path, marker: str | None, fix: str = "choose another folder") -> None:
    """Refuse to replace an existing `folder` unless ForgeLLM made it, as told by its `marker` file.

    Every kind of folder the project writes whole (fused models, built models, checkpoints, data
    caches) carries a marker file; a folder without it is the user's and is never replaced.

    Raises:
        ForgeError: when `folder` exists and `marker` is None or absent from it.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if marker is not None and folder.is_dir() and not folder.is_symlink() and (folder / marker).is_file():
        return
    from .errors import ForgeError

    raise ForgeError(
        "this folder already exists and was not written by ForgeLLM: it is left untouched", str(folder), fix
    )


@contextmanager
def atomic_folder(final: Path, replace_marker: str | None = None, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it is renamed to `final`, on error removed.

    An existing `final` is replaced (only after the new folder is complete) when it holds the file
    `replace_marker`, i.e. when ForgeLLM wrote it; any other existing folder is refused up front.
    With `keep_existing` (built models, data caches: the same content whoever builds it), a complete
    folder that another process finished first is kept and the new copy dropped, so a reader never
    sees the folder missing.
    """
    final = Path(final)
    require_replaceable(final, replace_marker)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the finished folder gets normal permissions
    try:
        yield tmp
        _fsync_tree(tmp)  # the data is on disk before the name is: a power cut cannot leave a complete-looking folder
        if keep_existing and replace_marker and (final / replace_marker).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
        elif final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same folder a moment ago
                if not (keep_existing and replace_marker and (final / replace_marker).is_file()):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    fsync_files([*(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()), folder])


def fsync_files(paths: list[Path]) -> None:
    """Flush each file (or folder entry list) to disk; cheap for one already flushed."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""The project's error type: every user-facing failure says what, where and how to fix it."""

from __future__ import annotations

import errno
import os
import stat


class ForgeError(Exception):
    """A problem the user can act on.

    Library code raises this; the CLI prints it and exits non-zero, the UI shows it as a message.

    Args:
        what: What is wrong, in one sentence.
        where: The file, line, config key or run folder concerned (optional).
        fix: What the user should do about it (optional).
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return "\n".join(parts)


class ConfigError(ForgeError):
    """One or more problems in a training config; `problems` lists every one of them."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        header = f"{len(self.problems)} problem(s) in the config"
        body = "\n".join(f"  - {p}" for p in self.problems)
        fix = "change each value named above; every key with its type, default and help is in forgellm/config.py"
        super().__init__(f"{header}:\n{body}", where=source, fix=fix)


class DataError(ForgeError):
    """No usable data: the message names each rejected file and why.

    `report` holds what was read (files, problems) in the data report's shape, so a trainer can write it
    to the run folder's data_report.json even though no rows were made.
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None, report: dict | None = None):
        super().__init__(what, where, fix)
        self.report = report


def custom_code_refusal(error: BaseException, folder: object, trusted_here: bool) -> ForgeError | None:
    """The error to show when loading failed because a model ships its own code (transformers' `auto_map`),
    which ForgeLLM never runs unless the user set `trust_remote_code`; None for any other failure."""
    if "trust_remote_code" not in str(error):
        return None
    if trusted_here:
        fix = (
            "read the folder's *.py files; if you trust them, set trust_remote_code: true in the run's config "
            "(Training tab: model and method)"
        )
    else:
        fix = "chat, evaluation and publishing never run a model's own code: pick a model that loads without it"
    return ForgeError(
        "this model ships its own tokenizer or model code, which is not run unless allowed", str(folder), fix
    )


FILE, FOLDER, MISSING = "a file", "a folder", "missing"
LINK_LOOP = "a symbolic link loop (the links point at each other)"
_SPECIAL_FILES = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def path_kind(path: str | os.PathLike) -> str:
    """What `path` is, in words for a message: "a file", "a folder", MISSING, "a symbolic link loop (...)",
    "a named pipe (FIFO)", ... so that an error can say what was given instead of "does not exist"."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return LINK_LOOP
        if os.path.islink(path):
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        if e.errno == errno.ENOENT:
            return MISSING
        return f"unreadable ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return FOLDER
    if stat.S_ISREG(mode):
        return FILE
    return _SPECIAL_FILES.get(stat.S_IFMT(mode), "a special file")

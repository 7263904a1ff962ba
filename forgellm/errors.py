"""The project's error type: every user-facing failure says what, where and how to fix it."""

from __future__ import annotations


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
        super().__init__(f"{header}:\n{body}", where=source)

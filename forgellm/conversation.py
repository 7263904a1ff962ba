"""A chat saved as JSON (to load and continue later) or exported as Markdown (to read or share).

The JSON file, version 1:

```json
{
  "format": "forgellm-conversation",
  "version": 1,
  "saved_at": "2026-12-01T16:00:00Z",
  "model": "tiny",                       # a built-in name, a folder under models/, or a Hub id
  "adapter": "20261201-160000-cpt-tiny", # a run name (or run/checkpoint folder); null = the base model
  "checkpoint": "best",                  # best, latest or a step; null without an adapter
  "system": "You are a beekeeper.",      # the system prompt ("" = none)
  "chat_template": null,                 # a template the user typed in place of the model's (null = the model's)
  "settings": {"max_tokens": 200, "temperature": 0.7, "top_p": 0.95, "top_k": 0, "min_p": 0.0,
               "repetition_penalty": 1.0, "repetition_context_size": 20, "seed": null},
  "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
  "base_messages": null                  # side by side: the base model's column (same user turns)
}
```

Only `messages` is required; every other key falls back to the default shown. Loading reports every
problem of a file at once (bad JSON with its line and column, wrong types, unknown settings).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import write_text
from .errors import ForgeError
from .inference import GenerationSettings, settings_from_dict

FORMAT = "forgellm-conversation"
VERSION = 1
ROLES = ("system", "user", "assistant")
_KEYS = ("format", "version", "saved_at", "model", "adapter", "checkpoint", "system", "chat_template")
_FIX = "pick a file saved by ForgeLLM's Chat tab or `forgellm chat` (/save), or fix the keys named above"


@dataclass
class Conversation:
    """What a chat is made of: the messages and everything needed to continue it the same way."""

    messages: list[dict[str, str]] = field(default_factory=list)
    model: str = ""
    adapter: str | None = None
    checkpoint: str | None = None
    system: str = ""
    chat_template: str | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    base_messages: list[dict[str, str]] | None = None
    saved_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "saved_at": self.saved_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": self.model,
            "adapter": self.adapter,
            "checkpoint": self.checkpoint if self.adapter else None,
            "system": self.system,
            "chat_template": self.chat_template or None,
            "settings": dataclasses.asdict(self.settings),
            "messages": self.messages,
            "base_messages": self.base_messages,
        }


def to_json(conversation: Conversation) -> str:
    return json.dumps(conversation.to_dict(), indent=2, ensure_ascii=False) + "\n"


def save(conversation: Conversation, path: Path | str) -> Path:
    """Write the conversation as JSON (atomically: a failed save never leaves half a file)."""
    path = Path(path)
    write_text(path, to_json(conversation))
    return path


def load(path: Path | str) -> Conversation:
    """Read a conversation file; a ForgeError names the file and lists every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ForgeError(f"cannot read the conversation file: {e}", str(path), _FIX) from e
    return from_json(text, str(path))


def from_json(text: str, where: str = "conversation") -> Conversation:
    """Parse and check a conversation's JSON text (see the module docstring for the schema)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ForgeError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", where, _FIX) from e
    if not isinstance(data, dict):
        raise ForgeError(f"expected a JSON object, found {type(data).__name__}", where, _FIX)
    problems = _top_level_problems(data)
    messages, found = _messages(data.get("messages"), "messages", required=True)
    problems += found
    base, found = _messages(data.get("base_messages"), "base_messages", required=False)
    problems += found
    raw_settings = data.get("settings") or {}
    if not isinstance(raw_settings, dict):
        problems.append("settings: must be an object")
        raw_settings = {}
    settings, found = settings_from_dict(raw_settings)
    problems += found
    if problems:
        raise ForgeError(f"{len(problems)} problem(s) in the conversation file: " + "; ".join(problems), where, _FIX)
    return Conversation(
        messages=messages,
        model=data.get("model") or "",
        adapter=data.get("adapter") or None,
        checkpoint=data.get("checkpoint") or None,
        system=data.get("system") or "",
        chat_template=data.get("chat_template") or None,
        settings=settings,
        base_messages=base,
        saved_at=data.get("saved_at") or "",
    )


def _top_level_problems(data: dict[str, Any]) -> list[str]:
    problems = [f"{key}: unknown key" for key in data if key not in (*_KEYS, "settings", "messages", "base_messages")]
    if data.get("format", FORMAT) != FORMAT:
        problems.append(f"format: expected {FORMAT!r}, found {data.get('format')!r}")
    version = data.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        problems.append(f"version: this ForgeLLM reads version {VERSION}, found {version!r}")
    for key in ("saved_at", "model", "adapter", "checkpoint", "system", "chat_template"):
        if data.get(key) is not None and not isinstance(data[key], str):
            problems.append(f"{key}: must be a string (got {type(data[key]).__name__})")
    return problems


def _messages(value: Any, key: str, required: bool) -> tuple[list[dict[str, str]] | None, list[str]]:
    if value is None and not required:
        return None, []
    if not isinstance(value, list):
        return [], [f"{key}: must be a list of {{role, content}} objects"]
    out, problems = [], []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            problems.append(f"{key}[{i}]: must be an object with role and content")
        elif message.get("role") not in ROLES:
            problems.append(f"{key}[{i}].role: must be one of {', '.join(ROLES)} (got {message.get('role')!r})")
        elif not isinstance(message.get("content"), str):
            problems.append(f"{key}[{i}].content: must be a string")
        else:
            out.append({"role": message["role"], "content": message["content"]})
    return out, problems


# ---- Markdown --------------------------------------------------------------------------------------


def to_markdown(conversation: Conversation) -> str:
    """A readable transcript: the model, adapter and settings, then each turn under its role."""
    c = conversation
    who = c.model + (f" + adapter {c.adapter} (checkpoint {c.checkpoint or 'best'})" if c.adapter else "")
    s = c.settings
    lines = [
        f"# Conversation with {who}",
        "",
        f"Saved {c.saved_at or datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by ForgeLLM · "
        f"temperature {s.temperature:g} · top-p {s.top_p:g} · top-k {s.top_k} · min-p {s.min_p:g} · "
        f"repetition penalty {s.repetition_penalty:g} (last {s.repetition_context_size} tokens) · "
        f"max tokens {s.max_tokens} · seed {s.seed if s.seed is not None else 'none'}",
        "",
    ]
    if c.chat_template:
        lines += ["Chat template (typed by the user):", "", "```jinja", c.chat_template, "```", ""]
    if c.system:
        lines += [f"**System:** {c.system}", ""]
    lines += _turns(c.messages, "Assistant" + (" (fine-tuned)" if c.base_messages is not None else ""))
    if c.base_messages is not None:
        lines += ["---", "", f"# The same prompts to {c.model} without the adapter", ""]
        lines += _turns(c.base_messages, "Assistant (base)")
    return "\n".join(lines).rstrip() + "\n"


def _turns(messages: list[dict[str, str]], assistant: str) -> list[str]:
    lines = []
    for m in messages:
        title = {"user": "User", "assistant": assistant, "system": "System"}[m["role"]]
        lines += [f"## {title}", "", m["content"], ""]
    return lines

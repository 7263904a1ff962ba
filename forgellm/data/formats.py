"""Instruction-data formats: detect one per file, validate every record, normalise to chat messages.

Supported records (one per JSONL line, or items of a JSON list):

- chat:       {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
- completion: {"prompt": "...", "completion": "..."}
- alpaca:     {"instruction": "...", "input": "..." (optional), "output": "..."}
- sharegpt:   {"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}, ...]}
- text:       {"text": "..."}  (trained on every token, no chat template)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMATS = ("chat", "completion", "alpaca", "sharegpt", "text")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "model": "assistant",
}
EXAMPLES = {
    "chat": '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}',
    "completion": '{"prompt": "...", "completion": "..."}',
    "alpaca": '{"instruction": "...", "input": "", "output": "..."}',
    "sharegpt": '{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}',
    "text": '{"text": "..."}',
}


class Invalid(Exception):
    """A record that does not match its format: what is wrong and how to fix it."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what = what
        self.fix = fix


class Empty(Exception):
    """A well-formed record with nothing to train on (e.g. an empty answer)."""


@dataclass
class Example:
    """One instruction example, normalised: chat messages, or plain text for the text format."""

    messages: list[dict[str, str]] | None
    text: str | None
    file: str
    line: int
    format: str
    digest: int = 0  # first 8 bytes of the content hash: duplicates and the seeded split use it


def detect(record: Any) -> str | None:
    """The format a record is written in, from its keys; None when it matches none."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "chat"
    if "conversations" in record:
        return "sharegpt"
    if "prompt" in record and "completion" in record:
        return "completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "text" in record:
        return "text"
    return None


def unknown_format_fix() -> str:
    return "write each record in one format, e.g. " + EXAMPLES["chat"] + " or " + EXAMPLES["completion"]


def normalise(record: dict[str, Any], fmt: str) -> tuple[list[dict[str, str]] | None, str | None]:
    """Turn a record of format `fmt` into (messages, None) or (None, text).

    Raises:
        Invalid: when the record is malformed for its format.
        Empty: when it has nothing to train on.
    """
    if fmt == "text":
        text = _string(record, "text", fmt)
        if not text.strip():
            raise Empty("'text' is empty")
        return None, text
    messages = _CONVERTERS[fmt](record)
    _check_conversation(messages, fmt)
    return messages, None


def _string(record: dict[str, Any], key: str, fmt: str, optional: bool = False) -> str:
    if record.get(key) is None:
        if optional:
            return ""
        raise Invalid(f"{fmt} record has no {key!r} field", f"write it as {EXAMPLES[fmt]}")
    value = record[key]
    if not isinstance(value, str):
        raise Invalid(f"{key!r} must be a string, got {type(value).__name__}", f"write it as {EXAMPLES[fmt]}")
    return value


def _chat(record: dict[str, Any]) -> list[dict[str, str]]:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise Invalid("'messages' must be a non-empty list", f"write it as {EXAMPLES['chat']}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise Invalid(f"message {i} needs 'role' and 'content'", f"write it as {EXAMPLES['chat']}")
        if m["role"] not in ROLES:
            raise Invalid(f"message {i} has role {m['role']!r}", f"use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            what = f"message {i} content must be a string, got {type(m['content']).__name__}"
            raise Invalid(what, "write the content as plain text (multimodal parts are not supported)")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _sharegpt(record: dict[str, Any]) -> list[dict[str, str]]:
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise Invalid("'conversations' must be a non-empty list", f"write it as {EXAMPLES['sharegpt']}")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise Invalid(f"turn {i} needs 'from' and 'value'", f"write it as {EXAMPLES['sharegpt']}")
        role = SHAREGPT_ROLES.get(str(t["from"]).lower())
        if role is None:
            raise Invalid(f"turn {i} is from {t['from']!r}", "use 'human', 'gpt' or 'system'")
        if not isinstance(t["value"], str):
            raise Invalid(f"turn {i} value must be a string, got {type(t['value']).__name__}", "write plain text")
        out.append({"role": role, "content": t["value"]})
    return out


def _completion(record: dict[str, Any]) -> list[dict[str, str]]:
    prompt = _string(record, "prompt", "completion")
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": _string(record, "completion", "completion")},
    ]


def _alpaca(record: dict[str, Any]) -> list[dict[str, str]]:
    instruction = _string(record, "instruction", "alpaca")
    extra = _string(record, "input", "alpaca", optional=True)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": _string(record, "output", "alpaca")}]


_CONVERTERS = {"chat": _chat, "sharegpt": _sharegpt, "completion": _completion, "alpaca": _alpaca}


def _check_conversation(messages: list[dict[str, str]], fmt: str) -> None:
    """Structure every chat template can render: optional system first, then the user opens."""
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        raise Invalid(f"a system message at position {roles.index('system', 1)}", "put the system message first, once")
    body = roles[1:] if roles[0] == "system" else roles
    if not body or body[0] != "user":
        raise Invalid(
            "the conversation must start with a user message (after an optional system one)",
            f"write it as {EXAMPLES[fmt]}",
        )
    if "assistant" not in body:
        raise Invalid("the conversation has no assistant message, so nothing to train on", "add the assistant's answer")
    if not any(m["content"].strip() for m in messages if m["role"] == "assistant"):
        raise Empty("every assistant message is empty")

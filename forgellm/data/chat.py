"""Chat templates and the character spans of assistant turns (what `mask_prompt` trains on).

The tokenizer's own template formats examples. When it has none, `DEFAULT_CHAT_TEMPLATE` is used: a
Zephyr-style layout whose turns end with the tokenizer's EOS token, so generation stops where an
answer ends. `prepare` returns the template actually used, and the trainer stores it in the run folder
so that chat and publishing format prompts the same way.

Assistant spans come from rendering the conversation incrementally: the text of turn i is what
`messages[:i + 1]` adds to `messages[:i]` plus the generation prompt. That is exact for any template
whose renderings are prefixes of each other (checked); for others the content is searched for.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


class TemplateError(Exception):
    """The chat template could not render a conversation (it raised, or its output cannot be aligned)."""


def choose_template(hf: Any) -> tuple[str, str]:
    """The template to use and where it came from: ("...", "tokenizer") or (DEFAULT_CHAT_TEMPLATE, "default")."""
    template = getattr(hf, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the unnamed/default one formats chats
        template = template.get("default") or next(iter(template.values()), None)
    if isinstance(template, str) and template.strip():
        return template, "tokenizer"
    return DEFAULT_CHAT_TEMPLATE, "default"


def _render(hf: Any, messages: list[dict[str, str]], template: str, generation: bool) -> str:
    try:
        return hf.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=generation
        )
    except Exception as e:  # noqa: BLE001 - templates raise anything (jinja errors, raise_exception())
        raise TemplateError(f"{type(e).__name__}: {e}") from e


def assistant_spans(hf: Any, messages: list[dict[str, str]], template: str) -> tuple[str, list[tuple[int, int]], bool]:
    """Render a conversation and find the characters of every assistant turn.

    Each span covers the assistant's content and the template's end-of-turn marker (e.g. EOS or
    <|im_end|>), without the trailing newline; headers such as "<|assistant|>\\n" are excluded.

    Returns:
        (rendered text, [(start, end), ...] one per assistant message, whether the search fallback
        was needed for a template whose renderings are not prefixes of each other).

    Raises:
        TemplateError: when the template fails or an assistant message cannot be located.
    """
    full = _render(hf, messages, template, False)
    spans: list[tuple[int, int]] = []
    fallback = False
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        span = _incremental_span(hf, messages, i, template, full)
        if span is None or (spans and span[0] < spans[-1][1]):
            span, fallback = _search_span(hf, full, message["content"], spans[-1][1] if spans else 0), True
        start, end = span
        spans.append((start, start + len(full[start:end].rstrip())))
    return full, spans, fallback


def _incremental_span(hf: Any, messages: list, i: int, template: str, full: str) -> tuple[int, int] | None:
    upto = _render(hf, messages[: i + 1], template, False)
    before = _render(hf, messages[:i], template, True)
    if not upto.startswith(before):  # a template that ignores add_generation_prompt
        before = _render(hf, messages[:i], template, False)
    if full.startswith(upto) and upto.startswith(before):
        return len(before), len(upto)
    return None


def _search_span(hf: Any, full: str, content: str, cursor: int) -> tuple[int, int]:
    """Locate `content` after `cursor`; extend over a special token right after it (the end of turn)."""
    at = full.find(content, cursor) if content else -1
    if at < 0:
        raise TemplateError("an assistant message does not appear verbatim in the rendered conversation")
    end = at + len(content)
    specials = sorted(getattr(hf, "all_special_tokens", []) or [], key=len, reverse=True)
    for token in specials:
        if token and full.startswith(token, end):
            return at, end + len(token)
    return at, end

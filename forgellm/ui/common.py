"""The one place where errors become messages, plus small widget helpers shared by the tabs."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from ..errors import ForgeError

log = logging.getLogger("forgellm.ui")

CSS = """
#forge-log textarea, #forge-report textarea {
  font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
}
.forge-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
.forge-card { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px 10px; }
.forge-card-label { font-size: 12px; opacity: 0.7; }
.forge-card-value { font-size: 16px; font-weight: 600; }
.forge-progress { height: 10px; border-radius: 5px; background: var(--border-color-primary); overflow: hidden; }
.forge-progress > div { height: 100%; background: var(--color-accent); }
"""

# Textbox(autoscroll=True) does not follow programmatic updates, so scroll the log to its end after
# each change (setTimeout: the new value is rendered after the change event fires).
SCROLL_LOG_JS = """
() => { setTimeout(() => {
  const box = document.querySelector('#forge-log textarea');
  if (box) { box.scrollTop = box.scrollHeight; }
}, 50); }
"""


def error_text(error: BaseException) -> str:
    """What to tell the user about `error`: a ForgeError's own message (every config problem listed);
    for anything else its type and text, with the traceback logged to the app's console."""
    if isinstance(error, ForgeError):
        return error.message
    log.error("unexpected error in the UI", exc_info=error)
    return f"unexpected {type(error).__name__}: {error} (the traceback is in the app's console)"


def show_error(error: BaseException) -> str:
    """Pop a warning toast for `error` and return Markdown for a visible message beside the control."""
    text = error_text(error)
    gr.Warning(text.splitlines()[0], duration=8)
    return f"**Error**\n\n```text\n{text}\n```"


def _values(choices: list[Any]) -> list[Any]:
    """The values of dropdown choices given as values or (label, value) pairs."""
    return [c[1] if isinstance(c, tuple) else c for c in choices]


def choices_update(choices: list[Any], value: Any = None, keep: Any = None) -> dict[str, Any]:
    """A dropdown update with fresh choices: `keep` stays selected while it is a choice, else `value`
    (None when neither is a choice, so a vanished run is never silently replaced by another)."""
    values = _values(choices)
    chosen = keep if keep in values else value if value in values else None
    return gr.update(choices=choices, value=chosen)


def choices_refresh(choices: list[Any], current: Any, default: Any = None) -> dict[str, Any]:
    """Fresh choices for a list refreshed in the background (the timer, a page load): the selection is
    sent only when it has to change, because `current` is what the browser had when the refresh left and
    the user or another event may have chosen since; sending it back would undo that (a model folder
    just fused, unselected by the tick that saw its folder appear). A choices-only update keeps the
    browser's selection. `current` gone from the list gives way to `default` (None when not a choice)."""
    values = _values(choices)
    if current in values or (current is None and default not in values):
        return gr.update(choices=choices)
    return gr.update(choices=choices, value=default if default in values else None)


def multi_choices_refresh(choices: list[Any], current: list[Any] | None) -> dict[str, Any]:
    """`choices_refresh` for a multi-select: the values still listed are kept, sent only when some went."""
    values = _values(choices)
    kept = [v for v in current or [] if v in values]
    return gr.update(choices=choices) if len(kept) == len(current or []) else gr.update(choices=choices, value=kept)


def guarded(on_error: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The one error handler of the app's event handlers.

    Any exception a handler (or a generator handler, mid-stream) raises is shown to the user (toast
    plus Markdown, unexpected ones logged with their traceback) and the handler's outputs become
    `on_error(error_markdown, *inputs)`, so each handler only says what its outputs show on failure.
    """

    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(handler):

            @functools.wraps(handler)
            def stream(*inputs: Any) -> Any:
                try:
                    yield from handler(*inputs)
                except Exception as e:  # noqa: BLE001 - shown to the user, never swallowed
                    yield on_error(show_error(e), *inputs)

            return stream

        @functools.wraps(handler)
        def call(*inputs: Any) -> Any:
            try:
                return handler(*inputs)
            except Exception as e:  # noqa: BLE001 - shown to the user, never swallowed
                return on_error(show_error(e), *inputs)

        return call

    return wrap


def forget_replaced_components(demo: gr.Blocks, request: gr.Request | None) -> int:
    """Drop, from this browser session's state, the components Gradio made for earlier output updates.

    Gradio 6 answers every output of an event (a `gr.skip()` included) with a new component that it also
    keeps in the session's config under an id of its own, and never drops: a tab left open on Monitoring
    while a run trained grew the app by ~2.5 MB a minute (bench/chat_load_bench.py, 12 components a
    tick). The app has no dynamic (`gr.render`) components, so an id it does not have is one of those.
    Returns how many were dropped; 0 when this Gradio keeps sessions some other way.
    """
    if request is None or not getattr(request, "session_hash", None):
        return 0
    try:
        session = demo.state_holder.session_data.get(request.session_hash)
        if session is None:
            return 0
        app_ids = demo.blocks.keys()
        dropped = 0
        for store in (session.blocks_config.blocks, session.config_values):
            for key in [k for k in list(store) if k not in app_ids]:
                if store.pop(key, None) is not None:
                    dropped += 1
        return dropped
    except (AttributeError, TypeError, RuntimeError):  # another layout of Gradio's internals, or a race
        return 0

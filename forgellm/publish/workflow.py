"""The Publishing tab's steps as plain functions: which folders can be published, their card, preflight
and push with progress. No gradio here; `forgellm.ui.publishing` only wires widgets to these.

The app names model folders by their plain name under models/ (never a path), so nothing outside the
project's models folder is reachable from the browser.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from .. import paths
from ..atomic import write_text
from ..errors import ForgeError
from .adapter import PROVENANCE_FILE as ADAPTER_PROVENANCE
from .fuse import PROVENANCE_FILE
from .quantize import QUANTIZE_FILE

PUBLISHABLE_MARKERS = (PROVENANCE_FILE, ADAPTER_PROVENANCE, QUANTIZE_FILE)


def publishable_folders() -> list[str]:
    """Names of the folders under models/ that ForgeLLM wrote for publishing (fused, quantized, adapter)."""
    root = paths.models_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and any((p / marker).is_file() for marker in PUBLISHABLE_MARKERS)
    )


def model_folder(name: str | None) -> Path:
    """The folder of a publishable model chosen by name; anything else is refused."""
    if not name or name not in publishable_folders():
        raise ForgeError(
            f"no publishable model named {name!r} under models/",
            "model folder",
            "fuse a checkpoint, quantize a fused model or export an adapter first, then pick it",
        )
    return paths.models_dir() / name


def card_text(name: str | None) -> str:
    """The folder's model card (README.md), written first from the run when ForgeLLM has not yet."""
    from .card import card_state, write_card

    folder = model_folder(name)
    readme = folder / "README.md"
    if (folder / PROVENANCE_FILE).is_file() and card_state(readme) in ("absent", "placeholder"):
        write_card(folder)
    if not readme.is_file():
        raise ForgeError("this folder has no model card", str(folder), "export it again to write one")
    return readme.read_text(encoding="utf-8")


def save_card(name: str | None, text: str) -> str:
    """Save an edited card after checking its front matter parses; an edited card is kept from then on."""
    from .card import read_front_matter

    folder = model_folder(name)
    if not read_front_matter(text):
        raise ForgeError(
            "the card's front matter is missing or is not valid YAML",
            "model card",
            "keep a --- block of `key: value` lines at the top (the Hub reads it), e.g. library_name: mlx",
        )
    write_text(folder / "README.md", text)
    return f"Saved the card of **{folder.name}** ({len(text):,} characters); it is kept as you edited it."


def preflight_report(name: str | None, repo_id: str, public: bool, token: str | None, allow_failed: bool) -> str:
    """The preflight as Markdown: what would be sent where, and every problem with its fix."""
    from .hub import preflight

    plan = preflight(
        model_folder(name), repo_id, private=not public, token=token or None, allow_failed_roundtrip=allow_failed
    )
    verdict = "ready to push" if plan.ok else f"{len(plan.problems)} problem(s): nothing will be sent"
    return f"**Preflight: {verdict}**\n\n```text\n{plan.summary()}\n```"


def push_progress(name: str | None, repo_id: str, public: bool, token: str | None, allow_failed: bool) -> Iterator[str]:
    """Push, yielding a Markdown status line per step and the repo's link at the end.

    The push runs on a worker thread; its progress comes back through a queue so the app can stream it.
    Its errors (already ForgeErrors with the fix, token scrubbed) are raised here, to the tab's handler.
    """
    from .hub import push

    folder = model_folder(name)
    events: queue.Queue = queue.Queue()
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["result"] = push(
                folder,
                repo_id,
                private=not public,
                token=token or None,
                allow_failed_roundtrip=allow_failed,
                progress=lambda step: events.put(step.message),
            )
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e
        finally:
            events.put(None)

    threading.Thread(target=work, name="forgellm-push", daemon=True).start()
    lines: list[str] = []
    for message in iter(events.get, None):
        lines.append(f"- {message}")
        yield "**Pushing...**\n\n" + "\n".join(lines)
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    visibility = "private" if result.private else "public"
    lines.append(f"- done: {len(result.files)} file(s) in one commit")
    yield f"**Pushed** to [{result.url}]({result.url}) ({visibility}).\n\n" + "\n".join(lines)

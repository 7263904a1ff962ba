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
from .card_file import CARD_FILE, parse_front_matter
from .fuse import PROVENANCE_FILE
from .quantize import QUANTIZE_FILE, QuantizeReport, quantize_fused

PUBLISHABLE_MARKERS = (PROVENANCE_FILE, ADAPTER_PROVENANCE, QUANTIZE_FILE)
_FRONT_MATTER_FIX = "keep a --- block of `key: value` lines at the top (the Hub reads it), e.g. library_name: mlx"


def publishable_folders() -> list[str]:
    """Names of the folders under models/ that ForgeLLM wrote for publishing (fused, quantized, adapter).

    A symlink is never one: ForgeLLM writes real folders, and a link could lead the app outside models/.
    """
    root = paths.models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _written_for_publishing(p))


def _written_for_publishing(folder: Path) -> bool:
    real = folder.is_dir() and not folder.is_symlink()
    return real and any((folder / marker).is_file() for marker in PUBLISHABLE_MARKERS)


def model_folder(name: str | None) -> Path:
    """The folder of a publishable model chosen by name; anything else is refused."""
    if not name or name not in publishable_folders():
        raise ForgeError(
            f"no publishable model named {name!r} under models/",
            "model folder",
            "fuse a checkpoint, quantize a fused model or export an adapter first, then pick it",
        )
    return paths.models_dir() / name


def quantize_folder(name: str | None, bits: int, group_size: int) -> tuple[Path, QuantizeReport]:
    """Quantize the fused folder `name` into models/<name>-<bits>bit (only an earlier quantize output there
    is replaced); returns that folder and the perplexity report."""
    source = model_folder(name)
    out = paths.models_dir() / f"{source.name}-{int(bits)}bit"
    return out, quantize_fused(source, out, bits=int(bits), group_size=int(group_size))


def card_text(name: str | None) -> str:
    """The folder's model card (README.md), written first from the run when ForgeLLM has not yet."""
    from .card import ensure_card

    folder = model_folder(name)
    readme = folder / CARD_FILE
    if (folder / PROVENANCE_FILE).is_file():
        ensure_card(folder)
    if not readme.is_file():
        raise ForgeError("this folder has no model card", str(folder), "export it again to write one")
    return readme.read_text(encoding="utf-8")


def save_card(name: str | None, text: str) -> str:
    """Save an edited card after checking its front matter parses; an edited card is kept from then on."""
    folder = model_folder(name)
    try:
        meta = parse_front_matter(text)
    except ValueError as e:
        raise ForgeError(f"the card is not saved: {e}", "model card", _FRONT_MATTER_FIX) from e
    if not meta:
        raise ForgeError("the card is not saved: it has no front matter", "model card", _FRONT_MATTER_FIX)
    write_text(folder / CARD_FILE, text)
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

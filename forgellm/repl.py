"""`forgellm chat`: talk to a model (optionally with a run's adapter) in the terminal, the reply streaming in.

Lines starting with `/` are commands (see `HELP`); anything else is a message. Replies go to stdout as
they are generated and a statistics line to stderr, so `forgellm chat < questions.txt > answers.txt`
keeps a clean transcript. Ctrl-C stops a reply (what was generated stays); Ctrl-D or /quit leaves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from . import conversation, inference, paths
from .errors import ForgeError

HELP = """commands:
  /system TEXT          set the system prompt (/system alone removes it)
  /reset                forget the conversation (the system prompt and settings stay)
  /params [key=value]   show the settings, or change some: max_tokens temperature (temp) top_p top_k min_p
                        repetition_penalty repetition_context_size seed (seed=none: unseeded)
  /save FILE            save the conversation as JSON (a FILE ending in .md: as Markdown)
  /load FILE            load a conversation saved as JSON and continue it
  /quit                 leave (Ctrl-D too)
anything else is a message to the model; Ctrl-C stops a reply."""


def resolve_adapter(value: str | None) -> Path | None:
    """`--adapter`: a run or checkpoint folder as given, else a run name under runs/."""
    if not value:
        return None
    for candidate in (Path(value).expanduser(), paths.runs_dir() / value):
        if candidate.is_dir():
            return candidate
    raise ForgeError(
        f"no run or checkpoint folder named {value!r}",
        "--adapter",
        f"pass a run folder, a checkpoint folder, or a run name under {paths.runs_dir()} (see `forgellm runs`)",
    )


class ChatRepl:
    """One terminal chat: the loaded model, the conversation so far, and the command handlers."""

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        checkpoint: str = "best",
        settings: inference.GenerationSettings | None = None,
        system: str = "",
        out: TextIO = sys.stdout,
        err: TextIO = sys.stderr,
    ):
        self.out, self.err = out, err
        self.loaded = inference.load_for_chat(model, resolve_adapter(adapter), checkpoint)
        self.chat = conversation.Conversation(
            model=model,
            adapter=adapter,
            checkpoint=checkpoint if adapter else None,
            system=system,
            settings=(settings or inference.GenerationSettings()).check(),
        )

    def run(self, lines: Iterable[str]) -> int:
        """Handle lines until /quit or the end of input; returns the exit status (0)."""
        self._say(f"chatting with {self.loaded.label} ({self.loaded.template()[1]}); /help lists the commands")
        for line in lines:
            try:
                if not self.handle(line.rstrip("\n")):
                    break
            except ForgeError as e:
                print(f"error: {e.message}", file=self.err, flush=True)
        return 0

    def handle(self, line: str) -> bool:
        """One input line; False when the chat should end."""
        text = line.strip()
        if not text:
            return True
        if not text.startswith("/"):
            self.ask(text)
            return True
        command, _, rest = text.partition(" ")
        rest = rest.strip()
        if command in ("/quit", "/exit", "/q"):
            return False
        handler = {
            "/system": self._system,
            "/reset": self._reset,
            "/params": self._params,
            "/save": self._save,
            "/load": self._load,
            "/help": lambda _rest: self._say(HELP),
        }.get(command)
        if handler is None:
            raise ForgeError(f"unknown command {command}", "chat", "type /help for the commands")
        handler(rest)
        return True

    def ask(self, text: str) -> None:
        """Send one user message and stream the reply to stdout; it joins the conversation when done."""
        messages = [*self.chat.messages, {"role": "user", "content": text}]
        prompt = self.loaded.prompt_for(messages, self.chat.system, self.chat.chat_template)
        reply, last, stopped = "", None, False
        with contextlib.closing(inference.stream(self.loaded, prompt, self.chat.settings)) as records:
            try:
                for last in records:
                    reply += last.text
                    self.out.write(last.text)
                    self.out.flush()
            except KeyboardInterrupt:  # Ctrl-C: stop this reply, keep the chat
                stopped = True
        self.out.write("\n")
        self.out.flush()
        print(f"[{inference.reply_stats(last, stopped, self.loaded.context_length)}]", file=self.err, flush=True)
        self.chat.messages = [*messages, {"role": "assistant", "content": reply}]

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _system(self, text: str) -> None:
        self.chat.system = text
        self._say(f"system prompt set: {text}" if text else "system prompt removed")

    def _reset(self, _rest: str) -> None:
        self.chat.messages = []
        self._say("conversation cleared")

    def _params(self, rest: str) -> None:
        if rest:
            self.chat.settings = inference.parse_settings(self.chat.settings, rest.split())
        values = dataclasses.asdict(self.chat.settings)
        self._say(" ".join(f"{key}={'none' if value is None else value}" for key, value in values.items()))

    def _save(self, rest: str) -> None:
        path = Path(_one_path(rest, "/save")).expanduser()
        if path.suffix.lower() == ".md":
            from .atomic import write_text

            write_text(path, conversation.to_markdown(self.chat))
        else:
            conversation.save(self.chat, path)
        self._say(f"saved {len(self.chat.messages)} messages to {path}")

    def _load(self, rest: str) -> None:
        path = Path(_one_path(rest, "/load")).expanduser()
        loaded = conversation.load(path)
        saved_with = (loaded.model, loaded.adapter)
        if loaded.model and saved_with != (self.chat.model, self.chat.adapter):
            self._say(f"note: saved with {loaded.model} + {loaded.adapter or 'no adapter'}; continuing with "
                      f"{self.loaded.label}")  # fmt: skip
        self.chat = dataclasses.replace(
            loaded,
            model=self.chat.model,
            adapter=self.chat.adapter,
            checkpoint=self.chat.checkpoint,
            base_messages=None,
        )
        self._say(f"loaded {len(loaded.messages)} messages from {path}")


def _one_path(rest: str, command: str) -> str:
    parts = shlex.split(rest) if rest else []
    if len(parts) != 1:
        raise ForgeError(f"{command} takes one file name", "chat", f"e.g. {command} chat.json")
    return parts[0]


def input_lines(stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> Iterator[str]:
    """Lines typed at a `> ` prompt on a terminal; from a pipe, each line echoed after `> ` for the transcript."""
    if stdin.isatty():
        while True:
            try:
                yield input("> ")
            except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt, not the end of the chat
                print(file=out)
            except EOFError:
                print(file=out)
                return
    for line in stdin:
        print(f"> {line.rstrip()}", file=out, flush=True)
        yield line

"""Tokenizer access: unwrap mlx-lm's wrapper, batch-encode with the fast (Rust) backend, fingerprint.

The pipeline works on a private copy of the Hugging Face backend tokenizer so that disabling truncation
or treating special-token text literally never changes the tokenizer the caller holds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ForgeError

# Texts longer than this are tokenized in pieces. The backend keeps per-token strings and per-byte
# alignments for a whole input (a 50 MB file would cost gigabytes) and encodes a batch in parallel only
# across inputs; pieces of ~4 KB also prepared faster than 64 KB ones in every interleaved pair of
# bench/data_bench.py runs (BENCHMARKS.md). Every cut is checked to leave the token
# ids unchanged (see `_exact`): where a pre-tokenizer splits depends on the tokenizer (GPT-2 style
# regexes split "\n\nThe" as "\n" "\n" "The" but a text ending in "\n\n" as one "\n\n").
PIECE_CHARS = 1 << 12
CUT_CONTEXT = 32  # characters each side of a cut that the exactness check tokenizes
CUT_CANDIDATES = 6  # places tried per cut before one is accepted as inexact
MAX_RUN = 256  # longest run of one character kind a window edge is moved across
# A tokenizer that marks the start of every input (SentencePiece style "▁") changes ids at any cut:
# for those, pieces stay large so that few cuts are made.
UNCUTTABLE_PIECE_CHARS = 1 << 16


@dataclass
class TokenizerInfo:
    """What the pipeline needs from a tokenizer, resolved once."""

    hf: Any
    backend: Any
    eos_id: int
    pad_id: int
    prefix: list[int]
    suffix: list[int]
    fingerprint: str
    name: str
    cut_before_break: bool = False  # cut long texts just before the line break in front of text (else after it)
    piece_chars: int = PIECE_CHARS
    cuts: int = 0  # places where a long text was cut into pieces, and those where no exact place was found
    inexact_cuts: int = 0

    def encode_documents(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize documents for packing: special-token text is literal and each ends with EOS.

        Args:
            texts: Documents to encode (one batch; the backend encodes them in parallel).

        Returns:
            (flat int32 ids of all documents back to back, int64 token count per document).
        """
        self.backend.encode_special_tokens = True  # a document mentioning "<|im_end|>" is just text
        pieces, owner = self._split_pieces(texts)
        encodings = self.backend.encode_batch_fast(pieces, add_special_tokens=False)
        per_doc: list[list[list[int]]] = [[] for _ in texts]
        for doc, enc in zip(owner, encodings, strict=True):
            per_doc[doc].append(enc.ids)
        tail = self.suffix if self.suffix[-1:] == [self.eos_id] else [*self.suffix, self.eos_id]
        lengths = np.array([len(self.prefix) + sum(map(len, p)) + len(tail) for p in per_doc], dtype=np.int64)
        chain = itertools.chain.from_iterable(itertools.chain([self.prefix], p, [tail]) for p in per_doc)
        flat = np.fromiter(itertools.chain.from_iterable(chain), dtype=np.int32, count=int(lengths.sum()))
        return flat, lengths

    def encode_with_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Tokenize rendered chat texts as-is (template special tokens recognised), with char offsets."""
        self.backend.encode_special_tokens = False
        return [(e.ids, e.offsets) for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def _split_pieces(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """Texts cut into pieces of about PIECE_CHARS whose token ids, joined, equal the whole text's."""
        options = {
            i: _cut_options(t, self.piece_chars, self.cut_before_break)
            for i, t in enumerate(texts)
            if len(t) > self.piece_chars
        }
        chosen = self._choose(texts, options)
        pieces: list[str] = []
        owner: list[int] = []
        for index, text in enumerate(texts):
            bounds = [0, *chosen.get(index, []), len(text)]
            pieces += [text[a:b] for a, b in itertools.pairwise(bounds)]
            owner += [index] * (len(bounds) - 1)
        return pieces, owner

    def _choose(self, texts: list[str], options: dict[int, list[list[int]]]) -> dict[int, list[int]]:
        """For each cut, the first candidate place where cutting does not change the tokens.

        The first candidate is checked for every cut in one batch; the others only where it fails.
        A cut with no exact candidate keeps its first one and is counted in `inexact_cuts`.
        """
        cuts = [(index, places) for index, per_text in options.items() for places in per_text]
        chosen = [places[0] for _, places in cuts]
        first = _exact(self.backend, texts, [(index, places[0]) for index, places in cuts])
        retry = [(k, c) for k, ok in enumerate(first) if not ok for c in cuts[k][1][1:]]
        fixed: dict[int, int] = {}
        for (k, c), ok in zip(retry, _exact(self.backend, texts, [(cuts[k][0], c) for k, c in retry]), strict=True):
            if ok:
                fixed.setdefault(k, c)
        for k, c in fixed.items():
            chosen[k] = c
        self.cuts += len(cuts)
        self.inexact_cuts += first.count(False) - len(fixed)
        per_text: dict[int, list[int]] = {index: [] for index in options}
        for (index, _), c in zip(cuts, chosen, strict=True):
            per_text[index].append(c)
        return per_text


def _cut_options(text: str, size: int, before_break: bool) -> list[list[int]]:
    """Candidate places for each cut of `text`, best first; consecutive cuts are ~`size` apart."""
    options, start = [], 0
    while len(text) - start > size:
        places = _places(text, start + size // 2, start + size, before_break)
        options.append(places)
        start = places[0]
    return options


def _places(text: str, lo: int, hi: int, before_break: bool) -> list[int]:
    """Up to CUT_CANDIDATES places in (lo, hi], last ones first: where a line of text starts and just
    before the whitespace character in front of it (in the order `before_break` says this tokenizer
    prefers); then the same at word starts; else `hi` itself."""
    for separator in ("\n", " "):
        places: list[int] = []
        at = hi
        while len(places) < CUT_CANDIDATES and (at := text.rfind(separator, lo, at)) > lo:
            if not text[at + 1 : at + 2].isspace():
                places += [at, at + 1] if before_break else [at + 1, at]
        if places:
            return places[:CUT_CANDIDATES]
    return [hi]


def _exact(backend: Any, texts: list[str], checks: list[tuple[int, int]]) -> list[bool]:
    """For each (text index, place): does tokenizing each side separately give the ids of the whole?

    Decided on a window of about CUT_CONTEXT characters each side of the place. A window edge never
    sits inside a run of one kind of character (spaces, digits, letters, punctuation): a pre-token
    reaching from outside the window up to the place (40 spaces before a digit) would be seen cut
    short. A run longer than MAX_RUN counts as not exact.
    """
    if not checks:
        return []
    windows, decidable = [], []
    for index, c in checks:
        text = texts[index]
        lo, hi = _edge(text, c - CUT_CONTEXT, -1), _edge(text, c + CUT_CONTEXT, +1)
        decidable.append(lo is not None and hi is not None)
        windows += [text[lo:hi], text[lo:c], text[c:hi]] if decidable[-1] else ["", "", ""]
    ids = [e.ids for e in backend.encode_batch_fast(windows, add_special_tokens=False)]
    return [ok and ids[3 * k] == ids[3 * k + 1] + ids[3 * k + 2] for k, ok in enumerate(decidable)]


def _edge(text: str, at: int, step: int) -> int | None:
    """`at` (clamped to the text) moved by `step` until it is not inside a run of one character kind."""
    at = min(max(at, 0), len(text))
    for _ in range(MAX_RUN):
        if at <= 0 or at >= len(text) or _kind(text[at - 1]) != _kind(text[at]):
            return at
        at += step
    return None


def _kind(ch: str) -> int:
    return 0 if ch.isspace() else 1 if ch.isdigit() else 2 if ch.isalpha() else 3


def hf_tokenizer(tokenizer: Any) -> Any:
    """The Hugging Face tokenizer behind mlx-lm's TokenizerWrapper (or the argument itself)."""
    inner = getattr(tokenizer, "_tokenizer", None)
    # A PreTrainedTokenizerFast also has `_tokenizer`: there it is the Rust backend, not a wrapper target.
    if inner is not None and hasattr(inner, "backend_tokenizer"):
        return inner
    return tokenizer


def tokenizer_info(tokenizer: Any) -> TokenizerInfo:
    """Resolve ids, special-token framing and a content fingerprint of `tokenizer`.

    Raises:
        ForgeError: when the tokenizer is not a fast tokenizer or has no EOS token.
    """
    hf = hf_tokenizer(tokenizer)
    original = getattr(hf, "backend_tokenizer", None)
    name = str(getattr(hf, "name_or_path", "") or type(hf).__name__)
    if original is None or not hasattr(original, "to_str"):
        raise ForgeError(
            f"tokenizer {name!r} is not a fast (Rust) tokenizer",
            "model",
            "use a model that ships tokenizer.json (every mlx-lm / Hugging Face chat model does)",
        )
    eos_id = getattr(hf, "eos_token_id", None)
    if eos_id is None:
        raise ForgeError(
            f"tokenizer {name!r} has no end-of-sequence token",
            "model",
            "set eos_token in the model's tokenizer_config.json; documents are separated by it",
        )
    serialized = original.to_str()
    backend = type(original).from_str(serialized)
    backend.no_truncation()
    backend.no_padding()
    prefix, suffix = _framing(backend)
    pad_id = hf.pad_token_id if getattr(hf, "pad_token_id", None) is not None else eos_id
    info = TokenizerInfo(hf, backend, int(eos_id), int(pad_id), prefix, suffix, "", name)
    info.fingerprint = _fingerprint(hf, serialized)
    before, after = _probe_cuts(backend)
    info.cut_before_break = before and not after
    info.piece_chars = PIECE_CHARS if before or after else UNCUTTABLE_PIECE_CHARS
    return info


def _probe_cuts(backend: Any) -> tuple[bool, bool]:
    """Whether cutting a paragraph break just before its last line break, or after it, keeps the ids.

    GPT-2 style regexes split "\n\nThe" as "\n", "\n", "The" (so only the first works); Llama-3 style
    ones keep "\n\n" whole (only the second); SentencePiece-style ones mark every input's start
    (neither).
    """
    probe = "Bees fly.\n\nThe hive"
    at = probe.index("The")
    before, after = _exact(backend, [probe], [(0, at - 1), (0, at)])
    return before, after


def _framing(backend: Any) -> tuple[list[int], list[int]]:
    """Special ids the tokenizer's post-processor adds around a text (e.g. BOS), found by probing."""
    bare = backend.encode("a", add_special_tokens=False).ids
    full = backend.encode("a", add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


def _fingerprint(hf: Any, serialized: str) -> str:
    """A hash of everything about the tokenizer that changes token ids or chat rendering."""
    h = hashlib.blake2b(digest_size=16)
    h.update(serialized.encode("utf-8"))
    template = getattr(hf, "chat_template", None)
    extras = {
        "class": type(hf).__name__,
        "special": {k: str(v) for k, v in (getattr(hf, "special_tokens_map", None) or {}).items()},
        "chat_template": template if isinstance(template, (str, dict)) else None,
    }
    h.update(json.dumps(extras, sort_keys=True).encode("utf-8"))
    return h.hexdigest()

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

# Texts longer than this are tokenized in pieces that start at a line: the backend keeps per-token
# strings and offsets for a whole input (a 50 MB file would cost gigabytes), and it encodes a batch in
# parallel only across inputs. A piece boundary sits after a newline that is followed by text, where
# byte-level pre-tokenizers split anyway; tokenizers that prefix each input with a space (SentencePiece
# style) may differ by one token per piece.
PIECE_CHARS = 1 << 16


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

    def encode_documents(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize documents for packing: special-token text is literal and each ends with EOS.

        Args:
            texts: Documents to encode (one batch; the backend encodes them in parallel).

        Returns:
            (flat int32 ids of all documents back to back, int64 token count per document).
        """
        self.backend.encode_special_tokens = True  # a document mentioning "<|im_end|>" is just text
        pieces, owner = _split_pieces(texts)
        encodings = self.backend.encode_batch_fast(pieces, add_special_tokens=False)
        per_doc: list[list[list[int]]] = [[] for _ in texts]
        for doc, enc in zip(owner, encodings):
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


def _split_pieces(texts: list[str]) -> tuple[list[str], list[int]]:
    pieces: list[str] = []
    owner: list[int] = []
    for index, text in enumerate(texts):
        start = 0
        while len(text) - start > PIECE_CHARS:
            cut = _cut(text, start + PIECE_CHARS // 2, start + PIECE_CHARS)
            pieces.append(text[start:cut])
            owner.append(index)
            start = cut
        pieces.append(text[start:])
        owner.append(index)
    return pieces, owner


def _cut(text: str, lo: int, hi: int) -> int:
    """A cut in [lo, hi): after a newline followed by text, else after any newline, else at hi."""
    at = hi
    while (at := text.rfind("\n", lo, at)) >= 0:
        if not text[at + 1 : at + 2].isspace():
            return at + 1
    newline = text.rfind("\n", lo, hi)
    return newline + 1 if newline >= 0 else hi


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
            f"tokenizer {name!r} is not a fast (Rust) tokenizer", "model",
            "use a model that ships tokenizer.json (every mlx-lm / Hugging Face chat model does)",
        )  # fmt: skip
    eos_id = getattr(hf, "eos_token_id", None)
    if eos_id is None:
        raise ForgeError(
            f"tokenizer {name!r} has no end-of-sequence token", "model",
            "set eos_token in the model's tokenizer_config.json; documents are separated by it",
        )  # fmt: skip
    serialized = original.to_str()
    backend = type(original).from_str(serialized)
    backend.no_truncation()
    backend.no_padding()
    prefix, suffix = _framing(backend)
    pad_id = hf.pad_token_id if getattr(hf, "pad_token_id", None) is not None else eos_id
    info = TokenizerInfo(hf, backend, int(eos_id), int(pad_id), prefix, suffix, "", name)
    info.fingerprint = _fingerprint(hf, serialized)
    return info


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

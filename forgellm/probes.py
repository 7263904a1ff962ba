"""Knowledge probes: did the model learn what the domain documents say? No judge model, no labels.

Items are cloze questions cut from a run's held-out domain documents (its validation split): a sentence
is cut just before a salient span, and the model must continue the text before it with that span.

- A salient span is one word-like token: a number ("1,800", "3.5"), a name (a capitalised word that
  does not start its sentence) or a term (a lower-case word of 7+ letters, not a common word), and it
  must also occur, as a whole word, in the run's training split: the knowledge was there to learn.
- The prompt is the text of the document right before the span: the sentence up to it, preceded by
  the sentence before it in the same paragraph when there is one (at most `MAX_PROMPT_CHARS`, cut at a
  word). The span keeps the space in front of it (" 1,800"), as a tokenizer sees a word mid-sentence,
  so `prompt + span` is a piece of the document. At least `MIN_WORDS_BEFORE` words of the sentence
  precede the span.
- One item per sentence at most: a number if it has one, else a name, else a term, chosen with a seeded
  generator; an item whose prompt and span repeat an earlier one is dropped; then at most `max_items`
  items are drawn with the same generator, kept in document order. The same documents and seed give
  the same items.

Scoring needs one forward pass per item (batched): the gold span's log-probability is the sum over its
tokens of log p(token | prompt and the span's tokens before it); the item is an exact match when every
span token is the argmax at its position, which is exactly when greedy decoding from the prompt
reproduces the span's tokens. Prompt and span are tokenized separately (prompt with the tokenizer's
document prefix, e.g. BOS, as CPT training frames a document) and concatenated.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ForgeError

MAX_PROMPT_CHARS = 400
MIN_WORDS_BEFORE = 4
MIN_TERM_LETTERS = 7
DEFAULT_MAX_ITEMS = 64
_WORD = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z][A-Za-z'-]*[A-Za-z]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_KINDS = ("number", "name", "term")
# Frequent long words that say nothing about a domain.
_COMMON = frozenset(
    "because between through without another however already although important different something "
    "usually therefore whether several against certain perhaps example including general possible "
    "probably rather really whatever whenever whichever within without becomes becoming brought".split()
)


@dataclass(frozen=True)
class ProbeItem:
    """One cloze item: `prompt + span` is the text of validation document `document` at offset `start`."""

    prompt: str
    span: str  # with its leading space, e.g. " 1,800"
    kind: str  # number, name or term
    document: int  # index among the run's validation documents (in reading order)
    start: int  # character offset of the prompt in that document


@dataclass
class ProbeScore:
    """How one model does on a set of items."""

    items: int
    accuracy: float  # fraction of items whose span greedy decoding reproduces
    mean_logprob: float  # mean over items of the span's summed log-probability (nats)
    logprobs: list[float]
    exact: list[bool]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeScore:
        return cls(**{k: data[k] for k in ("items", "accuracy", "mean_logprob", "logprobs", "exact")})


# ---- the run's documents -------------------------------------------------------------------------------


@dataclass
class RunDocuments:
    train: list[str]
    val: list[str]


def run_documents(cfg: Any) -> RunDocuments:
    """A CPT run's training and validation documents, split by the pipeline's own rule (`data.split`).

    Raises:
        ForgeError: for an IFT config (its examples are not documents) or data that cannot be read.
    """
    from .data.ingest import as_paths
    from .data.split import rank, val_count
    from .evaluation import read_documents

    if cfg.train_type != "cpt":
        raise ForgeError(
            "knowledge probes are cut from CPT documents; this run is IFT",
            f"data: {cfg.data}",
            "probe a CPT run, or use --data with a text file to measure perplexity",
        )
    docs = read_documents(as_paths(cfg.data), cfg.text_field)
    order = rank(docs.digests, cfg.seed)
    n_val = val_count(len(docs.texts), cfg.val_fraction)
    val, train = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    return RunDocuments([docs.texts[i] for i in train], [docs.texts[i] for i in val])


# ---- items ---------------------------------------------------------------------------------------------


def make_items(val_texts: list[str], train_texts: list[str], seed: int = 0, max_items: int = DEFAULT_MAX_ITEMS):
    """Cloze items from the validation documents whose span occurs in the training documents (see the module).

    Returns:
        list[ProbeItem], in document order; the same inputs and seed give the same list.
    """
    known = set(_WORD.findall("\n".join(train_texts)))
    rng = np.random.default_rng(seed)
    items: list[ProbeItem] = []
    seen: set[tuple[str, str]] = set()
    for d, text in enumerate(val_texts):
        for prev, start, end in _sentences(text):
            found = _candidates(text, start, end, known)
            kind = next((k for k in _KINDS if found[k]), None)
            if kind is None:
                continue
            s, e = found[kind][int(rng.integers(len(found[kind])))]
            first = _prompt_start(text, prev, start, s)
            if (text[first:s], text[s:e]) not in seen:  # a sentence repeated across documents counts once
                seen.add((text[first:s], text[s:e]))
                items.append(ProbeItem(text[first:s], text[s:e], kind, d, first))
    if len(items) > max_items:
        keep = np.sort(rng.choice(len(items), size=max_items, replace=False))
        items = [items[i] for i in keep]
    return items


def _sentences(text: str):
    """(start of the previous sentence in the paragraph, start, end) of each sentence of `text`."""
    offset = 0
    for line in text.split("\n"):
        prev = None
        starts = [0] + [m.end() for m in _SENTENCE_END.finditer(line)]
        ends = [m.start() for m in _SENTENCE_END.finditer(line)] + [len(line)]
        for a, b in zip(starts, ends, strict=True):
            yield (offset + prev if prev is not None else None), offset + a, offset + b
            prev = a
        offset += len(line) + 1


def _candidates(text: str, start: int, end: int, known: set[str]) -> dict[str, list[tuple[int, int]]]:
    """Spans (from the space before the word to its end) of each kind in the sentence text[start:end]."""
    found: dict[str, list[tuple[int, int]]] = {k: [] for k in _KINDS}
    words = list(_WORD.finditer(text, start, end))
    for i, m in enumerate(words):
        word = m.group()
        if i < MIN_WORDS_BEFORE or text[m.start() - 1] != " " or word not in known:
            continue
        if m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] == "_"):
            continue  # part of a longer token (e.g. "2nd", "x86_64")
        kind = _kind(word)
        if kind:
            found[kind].append((m.start() - 1, m.end()))
    return found


def _kind(word: str) -> str | None:
    if word[0].isdigit():
        return "number"
    if word[0].isupper() and any(c.islower() for c in word[1:]):
        return "name"
    if word.islower() and len(word) >= MIN_TERM_LETTERS and word not in _COMMON:
        return "term"
    return None


def _prompt_start(text: str, prev: int | None, start: int, span: int) -> int:
    first = prev if prev is not None else start
    if span - first > MAX_PROMPT_CHARS:  # too long: keep the end, from a word start when there is one
        space = text.find(" ", span - MAX_PROMPT_CHARS, span)
        first = space + 1 if space >= 0 else span - MAX_PROMPT_CHARS
    return first


# ---- scoring -------------------------------------------------------------------------------------------


def encode_item(item: ProbeItem, info: Any) -> tuple[list[int], list[int]]:
    """(prompt ids with the tokenizer's document prefix, span ids): what the model is scored on."""
    info.backend.encode_special_tokens = True  # text is text, as in the CPT pipeline
    prompt = info.backend.encode(item.prompt, add_special_tokens=False).ids
    span = info.backend.encode(item.span, add_special_tokens=False).ids
    return [*info.prefix, *prompt], span


def score_items(model: Any, tokenizer: Any, items: list[ProbeItem], batch_size: int = 16) -> ProbeScore:
    """Gold log-probability and greedy exact match of every item (see the module), in one pass per batch."""
    import mlx.core as mx

    from .data.tokens import tokenizer_info

    info = tokenizer_info(tokenizer)
    encoded = [encode_item(item, info) for item in items]
    logprobs: list[float] = []
    exact: list[bool] = []
    for b in range(0, len(encoded), batch_size):
        batch = encoded[b : b + batch_size]
        width = max(len(p) + len(s) for p, s in batch)
        ids = np.full((len(batch), width), info.pad_id, dtype=np.int32)
        for row, (p, s) in enumerate(batch):
            ids[row, : len(p) + len(s)] = [*p, *s]
        logits = model(mx.array(ids)).astype(mx.float32)
        logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        for row, (p, s) in enumerate(batch):
            at = np.arange(len(p) - 1, len(p) + len(s) - 1)  # positions that predict the span's tokens
            logprobs.append(float(logp[row, at, s].sum()))
            exact.append(bool((logp[row, at].argmax(-1) == np.array(s)).all()))
    n = len(items)
    return ProbeScore(n, float(np.mean(exact)) if n else 0.0, float(np.mean(logprobs)) if n else 0.0, logprobs, exact)


# ---- a run: base vs tuned ------------------------------------------------------------------------------


@dataclass
class ProbeReport:
    run: str
    checkpoint: str
    seed: int
    items: list[ProbeItem]
    base: ProbeScore
    tuned: ProbeScore

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "checkpoint": self.checkpoint,
            "seed": self.seed,
            "items": [asdict(i) for i in self.items],
            "base": self.base.as_dict(),
            "tuned": self.tuned.as_dict(),
        }

    def summary(self) -> str:
        head = f"knowledge probes: {len(self.items)} cloze items from the validation documents of {self.run}"
        lines = [head, f"{'model':<28} {'accuracy':>9} {'mean gold log-prob':>19}"]
        for name, s in (("base", self.base), (f"tuned ({Path(self.checkpoint).name})", self.tuned)):
            lines.append(f"{name:<28} {s.accuracy:>9.1%} {s.mean_logprob:>19.3f}")
        return "\n".join(lines)


def run_items(run_dir: Path, seed: int | None = None, max_items: int = DEFAULT_MAX_ITEMS) -> list[ProbeItem]:
    """The probe items of a CPT run (seeded by the run's seed unless `seed` is given).

    Raises:
        ForgeError: for an IFT run, or when the validation documents yield no item.
    """
    from .training.session import load_run_config

    cfg = load_run_config(Path(run_dir))
    docs = run_documents(cfg)
    items = make_items(docs.val, docs.train, cfg.seed if seed is None else seed, max_items)
    if not items:
        raise ForgeError(
            "the validation documents give no cloze item (no sentence with a number, name or term that "
            "also occurs in the training documents)",
            str(run_dir),
            "raise val_fraction or add documents",
        )
    return items


def probe_run(
    run_dir: Path, checkpoint: str = "best", seed: int | None = None, max_items: int = DEFAULT_MAX_ITEMS
) -> ProbeReport:
    """Score the base model and the run's `checkpoint` on the run's probe items."""
    from . import runs
    from .evaluation import load_model
    from .training.session import load_run_config

    run_dir = Path(run_dir).resolve()
    cfg = load_run_config(run_dir)
    adapter = runs.resolve_checkpoint(run_dir, checkpoint)
    items = run_items(run_dir, seed, max_items)
    scores = []
    for folder in (None, adapter):
        model, tokenizer = load_model(cfg.model, folder)
        scores.append(score_items(model, tokenizer, items))
    used_seed = cfg.seed if seed is None else seed
    return ProbeReport(str(run_dir), str(adapter), used_seed, items, scores[0], scores[1])

"""Shared fixtures for the data-pipeline tests: small real fast tokenizers and corpus builders.

Registered as a plugin by tests/conftest.py (fixtures); helpers are imported with `from conftest_data import ...`.
The tokenizers are byte-level BPEs trained in-process on a few KB of text, so tests are offline and fast.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = (
    "bee hive queen worker drone honey comb frame brood nectar pollen wax smoke veil swarm colony "
    "spring summer autumn winter water bread press vaccine cycle the a of and to in is on for with"
).split()


def sentences(n: int, seed: int = 0, words: int = 12) -> list[str]:
    """Deterministic pseudo-English sentences (each distinct, thanks to a running number)."""
    rng = random.Random(seed)
    return [f"{' '.join(rng.choice(WORDS) for _ in range(words)).capitalize()} {i}." for i in range(n)]


def _train_tokenizer(chat_template: str | None, texts: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts or sentences(300) + ["user assistant system"], trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>", unk_token=None
    )
    tok.chat_template = chat_template
    return tok


_CACHE: dict = {}


def paragraph_tokenizer():
    """Trained on paragraphs and indented code, so it has merges for runs of line breaks and spaces."""
    if "paragraphs" not in _CACHE:
        body = sentences(300)
        docs = ["\n\n".join(body[i : i + 3]) + "\n    indented  line\n\tdef f():\n\n" for i in range(0, 300, 3)]
        _CACHE["paragraphs"] = _train_tokenizer(CHATML, docs)
    return _CACHE["paragraphs"]


def make_tokenizer(chat_template: str | None = CHATML):
    key = chat_template
    if key not in _CACHE:
        _CACHE[key] = _train_tokenizer(chat_template)
    return _CACHE[key]


@pytest.fixture
def tok():
    """A byte-level BPE fast tokenizer with a ChatML template (eos <|im_end|>, pad <|pad|>)."""
    return make_tokenizer(CHATML)


@pytest.fixture
def tok_plain():
    """The same vocabulary without a chat template (the pipeline must use its default)."""
    return make_tokenizer(None)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def cfg(**kw):
    """A TrainConfig with small test defaults; nested mixture given as a dict."""
    from forgellm.config import from_dict

    data = {"max_seq_length": 16, "val_fraction": 0.25, "seed": 0}
    data.update(kw)
    value = data.get("data", "dataset/beekeeping")
    data["data"] = [str(v) for v in value] if isinstance(value, list) else str(value)
    return from_dict(data)


def new_word_tokenizer():
    """Word-level tokenizer: every whitespace-separated word of the vocabulary is exactly one token.

    Token counts are then known in advance (n words + 1 EOS per document), so reports can be checked
    number by number.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<eos>", "<pad>"] + [f"{p}{i}" for p in ("w", "doc", "gen", "ex") for i in range(400)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    return tok


def make_word_tokenizer():
    if "word" not in _CACHE:
        _CACHE["word"] = new_word_tokenizer()
    return _CACHE["word"]


@pytest.fixture
def wtok():
    """Word-level tokenizer (1 word = 1 token, eos <eos>, pad <pad>) for exact token counts."""
    return make_word_tokenizer()


def doc(tag: str, n: int, start: int = 0) -> str:
    """A document of exactly n words: the tag (e.g. "doc3") then n - 1 running words."""
    return " ".join([tag] + [f"w{(start + i) % 400}" for i in range(n - 1)])

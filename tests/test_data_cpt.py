"""CPT: packing conserves tokens, the split is by document, mixing hits its ratio, the report is exact.

The corpora here use a word-level tokenizer (one word = one token) so every expected number is known.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest_data import cfg, doc, make_tokenizer, paragraph_tokenizer

from forgellm.data import prepare
from forgellm.errors import ForgeError
from forgellm.paths import dataset_dir

EOS = 1  # id of <eos> in the word tokenizer


def stream_of(tokens: np.ndarray) -> np.ndarray:
    """Undo the windowing: rows overlap by one token (stride L, width L + 1)."""
    assert np.array_equal(tokens[1:, 0], tokens[:-1, -1]), "each window must start where the previous ended"
    return np.concatenate([tokens[:, :-1].ravel(), tokens[-1:, -1]])


def split_docs(stream: np.ndarray) -> list[tuple[int, ...]]:
    """Documents in a stream (each ends with EOS); the last piece may be a cut-off remainder."""
    ends = np.flatnonzero(stream == EOS)
    pieces, start = [], 0
    for end in ends:
        pieces.append(tuple(stream[start : end + 1].tolist()))
        start = end + 1
    if start < len(stream):
        pieces.append(tuple(stream[start:].tolist()))
    return pieces


@pytest.fixture
def known_corpus(tmp_path):
    """10 distinct documents of known length, plus one duplicate, one empty record and one skipped file."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    lengths = [30, 41, 25, 60, 33, 47, 38, 29, 52, 44]  # words; tokens = words + 1 (EOS)
    for i, n in enumerate(lengths[:8]):
        (root / ("sub" if i % 2 else "") / f"d{i}.txt").write_text(doc(f"doc{i}", n, start=i * 7), encoding="utf-8")
    records = [
        {"text": doc("doc8", lengths[8])},
        {"text": doc("doc9", lengths[9])},
        {"text": "  "},
        {"text": doc("doc8", lengths[8])},
    ]
    (root / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    return root, {f"doc{i}": n + 1 for i, n in enumerate(lengths)}


def test_report_numbers_are_exact_on_a_known_corpus(known_corpus, wtok, tmp_path):
    root, tokens_of = known_corpus
    c = cfg(data=root, max_seq_length=10, val_fraction=0.2)
    p = prepare(c, wtok, cache_dir=tmp_path / "cache")
    r = p.report
    assert r["documents"] == {"read": 12, "kept": 10, "empty": 1, "duplicates": 1, "train": 8, "val": 2}
    assert r["files_summary"]["found"] == 10 and r["files_summary"]["skipped"] == 1
    assert r["tokens"]["corpus"] == sum(tokens_of.values())

    vocab = wtok.get_vocab()
    names = {vocab[name]: name for name in tokens_of}
    val_docs = {names[t] for t in np.asarray(p.val.tokens).ravel().tolist() if t in names}
    train_docs = {names[t] for t in np.asarray(p.train.tokens).ravel().tolist() if t in names}
    assert r["tokens"]["val"] == sum(tokens_of[d] for d in val_docs)
    assert r["tokens"]["train"] == sum(tokens_of[d] for d in train_docs)
    for split, part in (("train", p.train), ("val", p.val)):
        s = r["splits"][split]
        total = r["tokens"][split]
        assert s["rows"] == (total - 1) // 10 == part.rows
        assert s["tokens_in_rows"] == s["rows"] * 10 + 1
        assert s["remainder"] == total - s["tokens_in_rows"] < 10
        assert s["targets"] == s["rows"] * 10
    y = r["yield"]
    assert y["unused_tokens"] == r["splits"]["train"]["remainder"] + r["splits"]["val"]["remainder"]
    assert y["fraction"] == pytest.approx((y["corpus_tokens"] - y["unused_tokens"]) / y["corpus_tokens"], abs=1e-5)
    assert r["lengths"]["count"] == 10 and sum(r["lengths"]["counts"]) == 10
    assert r["lengths"]["min"] == min(tokens_of.values()) and r["lengths"]["max"] == max(tokens_of.values())
    json.dumps(r)  # the report is JSON-serialisable


def test_packing_conserves_every_token_except_the_remainder(known_corpus, wtok, tmp_path):
    root, tokens_of = known_corpus
    p = prepare(cfg(data=root, max_seq_length=10, val_fraction=0.2), wtok, cache_dir=tmp_path / "cache")
    assert p.train.tokens.dtype == np.int32 and p.train.tokens.shape[1] == 11 and p.train.mask is None
    docs = {}
    for f in sorted(root.rglob("*.txt")):
        ids = wtok(f.read_text(), add_special_tokens=False)["input_ids"] + [EOS]
        docs[ids[0]] = tuple(ids)
    for line in (root / "more.jsonl").read_text().splitlines()[:2]:
        ids = wtok(json.loads(line)["text"], add_special_tokens=False)["input_ids"] + [EOS]
        docs[ids[0]] = tuple(ids)
    seen = []
    for split in ("train", "val"):
        stream = stream_of(np.asarray(getattr(p, split).tokens))
        pieces = split_docs(stream)
        for piece in pieces[:-1]:
            assert docs[piece[0]] == piece, "a whole document, never cut or reordered inside"
        last = pieces[-1]
        assert docs[last[0]][: len(last)] == last  # the only cut is the final remainder
        seen += [piece[0] for piece in pieces]
        assert len(stream) + p.report["splits"][split]["remainder"] == p.report["tokens"][split]
    assert sorted(seen) == sorted(docs), "every document lands in exactly one split"


def test_split_is_by_document_and_deterministic(tmp_path, wtok):
    root = tmp_path / "c"
    root.mkdir()
    for i in range(40):
        (root / f"{i:02d}.txt").write_text(doc(f"doc{i}", 20 + i % 7))
    c = cfg(data=root, max_seq_length=8, val_fraction=0.1)
    p = prepare(c, wtok, cache_dir=tmp_path / "a")
    q = prepare(c, wtok, cache_dir=tmp_path / "b")  # a fresh build, not a cache hit
    assert not q.report["cache"]["hit"]
    vocab = wtok.get_vocab()
    tags = {vocab[f"doc{i}"] for i in range(40)}

    def tags_in(split) -> set[int]:
        return tags & set(np.asarray(split.tokens).ravel().tolist())

    assert tags_in(p.val).isdisjoint(tags_in(p.train))
    assert len(tags_in(p.val)) == 4 == p.report["documents"]["val"]
    assert tags_in(p.val) == tags_in(q.val) and np.array_equal(p.train.tokens, q.train.tokens)
    other = prepare(cfg(data=root, max_seq_length=8, val_fraction=0.1, seed=1), wtok, cache_dir=tmp_path / "a")
    assert tags_in(other.val) != tags_in(p.val), "the seed chooses the validation documents"


@pytest.mark.parametrize("ratio", [0.8, 0.5])
def test_mixing_hits_the_ratio_and_validation_stays_domain(tmp_path, wtok, ratio):
    dom, gen = tmp_path / "dom", tmp_path / "gen"
    dom.mkdir()
    gen.mkdir()
    for i in range(30):
        (dom / f"{i}.txt").write_text(doc(f"doc{i}", 50 + 3 * i))
    for i in range(60):
        (gen / f"{i}.txt").write_text(" ".join(f"gen{(i * 13 + k) % 400}" for k in range(40 + i)))
    c = cfg(data=dom, max_seq_length=16, val_fraction=0.1, mixture={"general": str(gen), "ratio": ratio})
    p = prepare(c, wtok, cache_dir=tmp_path / "cache")
    m = p.report["mixture"]
    assert abs(m["ratio_achieved"] - ratio) < 0.01
    gen_ids = {wtok.get_vocab()[f"gen{i}"] for i in range(400)}
    train = np.asarray(p.train.tokens)[:, :-1].ravel()
    general_share = np.isin(train, list(gen_ids)).sum() / np.isin(train, [EOS], invert=True).sum()
    assert abs((1 - general_share) - ratio) < 0.01, "counted in the rows themselves, not just the report"
    assert not np.isin(np.asarray(p.val.tokens), list(gen_ids)).any()
    assert p.report["general_files_summary"]["read"] == 60 and m["general_repeats"] <= 1


def test_small_general_corpus_is_repeated_and_reported(tmp_path, wtok):
    dom, gen = tmp_path / "dom", tmp_path / "gen.txt"
    dom.mkdir()
    for i in range(10):
        (dom / f"{i}.txt").write_text(doc(f"doc{i}", 100))
    gen.write_text(" ".join(f"gen{k}" for k in range(50)))
    c = cfg(data=dom, max_seq_length=16, val_fraction=0.1, mixture={"general": str(gen), "ratio": 0.5})
    r = prepare(c, wtok, cache_dir=tmp_path / "cache").report
    assert r["mixture"]["general_repeats"] > 10
    assert abs(r["mixture"]["ratio_achieved"] - 0.5) < 0.01
    assert any("repeated" in note for note in r["notes"])


def test_too_small_corpus_stops_with_the_numbers(tmp_path, wtok):
    root = tmp_path / "c"
    root.mkdir()
    (root / "a.txt").write_text(doc("doc1", 100))
    with pytest.raises(ForgeError, match="1 document") as e:
        prepare(cfg(data=root), wtok, cache_dir=tmp_path / "cache")
    assert e.value.fix and "add documents" in e.value.fix
    (root / "b.txt").write_text(doc("doc2", 5))
    with pytest.raises(ForgeError, match=r"(training|validation) split gets 1 document\(s\) with \d+ tokens.*17") as e:
        prepare(cfg(data=root, max_seq_length=16, val_fraction=0.5), wtok, cache_dir=tmp_path / "cache")
    assert "max_seq_length" in e.value.fix
    assert not list((tmp_path / "cache").glob("*")), "a failed build leaves no cache entry"


def test_documents_mentioning_special_tokens_are_text(tmp_path):
    tok = make_tokenizer()
    root = tmp_path / "c"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.md").write_text(f"The marker <|im_end|> ends a turn in ChatML, note {i}. " * 5)
    p = prepare(cfg(data=root, max_seq_length=8, val_fraction=0.25), tok, cache_dir=tmp_path / "cache")
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    stream = stream_of(np.asarray(p.train.tokens))
    split = p.report["splits"]["train"]
    assert p.report["documents"]["train"] == 3  # 4 documents, one to validation
    # One EOS ends each training document; only the last one can fall in the unpacked remainder. Were
    # the literal "<|im_end|>" read as the special token, each document would add 5 more.
    expected = 3 - (split["remainder"] > 0)
    assert (stream == eos).sum() == expected >= 2, "only document separators are EOS, not the literal text"
    literal = tok("<|im_end|>", split_special_tokens=True, add_special_tokens=False)["input_ids"]
    assert eos not in literal and len(literal) > 1  # the text as ordinary tokens
    windows = np.lib.stride_tricks.sliding_window_view(stream, len(literal))
    assert (windows == literal).all(axis=1).sum() >= 5 * 2, "the marker text is kept, as text, in each document"


def test_mlx_lm_tokenizer_wrapper_is_accepted(tmp_path, wtok):
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    root = tmp_path / "c"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.txt").write_text(doc(f"doc{i}", 30))
    c = cfg(data=root, max_seq_length=8)
    wrapped = prepare(c, TokenizerWrapper(wtok), cache_dir=tmp_path / "cache")
    plain = prepare(c, wtok, cache_dir=tmp_path / "cache")
    assert plain.report["cache"]["hit"], "same tokenizer underneath: same cache entry"
    assert np.array_equal(wrapped.train.tokens, plain.train.tokens)


@pytest.mark.skipif(not (dataset_dir() / "beekeeping").is_dir(), reason="sample corpus not present")
def test_sample_corpus_yield_is_at_least_99_percent(tmp_path):
    from forgellm.models.tiny import corpus_texts, train_tokenizer

    tok = train_tokenizer(corpus_texts(), 4096)  # what the built-in tiny model uses
    c = cfg(data="dataset/beekeeping", max_seq_length=256, val_fraction=0.1)
    r = prepare(c, tok, cache_dir=tmp_path / "cache").report
    assert r["yield"]["fraction"] >= 0.99, r["yield"]


def test_long_documents_are_tokenized_in_pieces_without_changing_tokens(tmp_path, monkeypatch):
    from forgellm.data import tokens as tokens_module

    tok = paragraph_tokenizer()
    # Paragraph breaks before text ("\n\nLine"), indented code, tabs and runs of spaces: a byte-level
    # tokenizer merges "\n\n" at the end of a piece but not before text, so a naive cut changes ids.
    text = "\n".join(f"Line {i} of the hive journal.\n\nBees {i}.\n    indented  {i}\n\tdef f():" for i in range(60))
    whole = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    monkeypatch.setattr(tokens_module, "PIECE_CHARS", 64)  # cut every ~32-64 characters
    info = tokens_module.tokenizer_info(tok)
    flat, lengths = info.encode_documents([text, "short"])
    assert flat[: lengths[0]].tolist() == whole
    assert info.cuts > 40 and info.inexact_cuts == 0
    pieces, _ = tokens_module.tokenizer_info(tok)._split_pieces([text])
    assert "".join(pieces) == text and len(pieces) == info.cuts + 1
    after_breaks = re.split(r"(?<=\n)(?=\S)", text)  # cutting right after each line break, unchecked
    assert [i for p in after_breaks for i in tok(p, add_special_tokens=False)["input_ids"]] != whole[:-1]


def test_a_text_without_any_exact_cut_is_counted_in_the_report(tmp_path, monkeypatch):
    from forgellm.data import tokens as tokens_module

    monkeypatch.setattr(tokens_module, "PIECE_CHARS", 64)
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("honeycomb" * 500, encoding="utf-8")  # no spaces or lines: cut inside a word
    (folder / "b.txt").write_text("beehive" * 600, encoding="utf-8")
    r = prepare(
        cfg(data=str(folder), max_seq_length=16, val_fraction=0.5), make_tokenizer(), cache_dir=tmp_path / "cache"
    ).report
    assert r["tokenizer"]["cuts"] > 0
    assert 0 < r["tokenizer"]["inexact_cuts"] <= r["tokenizer"]["cuts"]
    assert any("changed the tokens" in n for n in r["notes"])


def test_a_cut_beside_a_long_run_is_checked_on_the_whole_run(monkeypatch):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from forgellm.data import tokens as tokens_module

    # SmolLM2's pre-tokenizer: digits are split off first, so the 40 spaces in front of a digit are one
    # pre-token, and its ids depend on the whole run, which is longer than the check's window.
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|im_end|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    runs = [f"x{' ' * n}7" for n in (1, 2, 4, 8, 16, 32)]  # 40 spaces = 32 + 8
    backend.train_from_iterator((runs + ["Bees fly.\n\n"]) * 50, trainer=trainer)  # and a "\n\n" merge
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>")
    monkeypatch.setattr(tokens_module, "PIECE_CHARS", 200)
    text = ("x" + " " * 40 + "7") * 60
    info = tokens_module.tokenizer_info(tok)
    assert info.cut_before_break  # like SmolLM2: the place before the space in front of "7" is tried first
    flat, _ = info.encode_documents([text])
    assert info.cuts > 5
    assert flat.tolist() == tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_a_tokenizer_that_marks_every_input_start_is_cut_rarely():
    from conftest_data import sentences
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from forgellm.data import tokens as tokens_module

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")  # "▁" before every input
    backend.train_from_iterator(
        sentences(200), trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], show_progress=False)
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    info = tokens_module.tokenizer_info(tok)
    # Behaviour, not the constants: a text several ordinary pieces long is encoded whole (no cut), and a
    # longer one is cut only every UNCUTTABLE_PIECE_CHARS or so; the ids are unchanged where no cut is made.
    medium = " ".join(sentences(200))[: 5 * tokens_module.PIECE_CHARS]
    flat, _ = info.encode_documents([medium])
    assert info.cuts == 0 and flat.tolist() == tok(medium, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    long = (medium + " ") * (2 * tokens_module.UNCUTTABLE_PIECE_CHARS // len(medium) + 1)
    info.encode_documents([long])
    assert 1 <= info.cuts <= len(long) // (tokens_module.UNCUTTABLE_PIECE_CHARS // 2)
    assert info.cuts < len(long) // tokens_module.PIECE_CHARS // 4, "far fewer cuts than an ordinary tokenizer gets"


def test_a_file_list_reads_each_listed_file_once(known_corpus, wtok, tmp_path):
    root, tokens_of = known_corpus
    listed = [root / "d0.txt", root / "sub", root / "more.jsonl", root / "sub" / "d1.txt"]  # d1 also inside sub/
    p = prepare(cfg(data=listed, max_seq_length=10, val_fraction=0.2), wtok, cache_dir=tmp_path / "cache")
    r = p.report
    assert r["files_summary"]["found"] == 6  # d0, sub/d1 d3 d5 d7, more.jsonl; image.png was not listed
    assert r["documents"]["kept"] == 7 and r["documents"]["duplicates"] == 1  # only the JSONL's own duplicate
    assert r["tokens"]["corpus"] == sum(tokens_of[f"doc{i}"] for i in (0, 1, 3, 5, 7, 8, 9))

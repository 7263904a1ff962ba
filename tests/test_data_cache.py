"""The tokenized-data cache: a second run with nothing changed does not tokenize; any change that
affects the data (a file, the general corpus, the tokenizer or its chat template, a data setting such
as the mixture ratio) does; writes are atomic."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest_data import CHATML, cfg, doc, make_tokenizer, new_word_tokenizer, write_jsonl

from forgellm.data import prepare
from forgellm.data.tokens import TokenizerInfo
from forgellm.errors import ForgeError


@pytest.fixture
def calls(monkeypatch):
    """Counts tokenizer batches (documents, and rendered chats), to prove a cache hit does not tokenize."""
    count = {"n": 0}
    for name in ("encode_documents", "encode_with_offsets"):
        original = getattr(TokenizerInfo, name)

        def counting(self, texts, original=original):
            count["n"] += 1
            return original(self, texts)

        monkeypatch.setattr(TokenizerInfo, name, counting)
    return count


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    for i in range(6):
        (root / f"{i}.txt").write_text(doc(f"doc{i}", 40 + i))
    return root


def test_second_run_is_a_hit_and_does_not_tokenize(corpus, wtok, calls, tmp_path):
    c = cfg(data=corpus, max_seq_length=8)
    first = prepare(c, wtok, cache_dir=tmp_path / "cache")
    assert calls["n"] > 0 and first.report["cache"]["hit"] is False
    calls["n"] = 0
    second = prepare(c, wtok, cache_dir=tmp_path / "cache")
    assert calls["n"] == 0 and second.report["cache"]["hit"] is True
    assert np.array_equal(first.train.tokens, second.train.tokens)
    assert isinstance(second.train.tokens, np.memmap)  # read back without loading it all
    unrelated = cfg(data=corpus, max_seq_length=8, learning_rate=0.1, iters=5)
    assert prepare(unrelated, wtok, cache_dir=tmp_path / "cache").report["cache"]["hit"]


def test_changed_file_tokenizer_or_setting_rebuilds(corpus, wtok, calls, tmp_path):
    c = cfg(data=corpus, max_seq_length=8)
    key = prepare(c, wtok, cache_dir=tmp_path / "cache").report["cache"]["key"]

    (corpus / "0.txt").write_text(doc("doc0", 41))  # same size class, different content
    changed = prepare(c, wtok, cache_dir=tmp_path / "cache").report["cache"]
    assert not changed["hit"] and changed["key"] != key

    other = new_word_tokenizer()
    other.add_tokens(["brandnew"])  # the vocabulary changes
    assert not prepare(c, other, cache_dir=tmp_path / "cache").report["cache"]["hit"]

    for setting in ({"max_seq_length": 9}, {"seed": 3}, {"val_fraction": 0.3}, {"text_field": "body"}):
        assert not prepare(
            cfg(data=corpus, **{"max_seq_length": 8, **setting}), wtok, cache_dir=tmp_path / "cache"
        ).report["cache"]["hit"]
    (corpus / "new.txt").write_text(doc("doc9", 30))
    assert not prepare(c, wtok, cache_dir=tmp_path / "cache").report["cache"]["hit"]


def test_ift_settings_are_part_of_the_key(tmp_path, wtok):
    write_jsonl(tmp_path / "d" / "t.jsonl", [{"prompt": f"ex{i}", "completion": f"w{i}"} for i in range(4)])
    base = {"data": tmp_path / "d", "train_type": "ift", "max_seq_length": 16}
    keys = {
        prepare(cfg(**base, **extra), wtok, cache_dir=tmp_path / "cache").report["cache"]["key"]
        for extra in ({}, {"mask_prompt": False}, {"overlong": "truncate"})
    }
    assert len(keys) == 3


def test_a_changed_chat_template_rebuilds_ift_data(tmp_path, calls):
    """Same vocabulary, another chat template: the rows are rendered anew, never served from the cache."""
    chats = [
        {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(6)
    ]
    write_jsonl(tmp_path / "d" / "chat.jsonl", chats)
    c = cfg(data=tmp_path / "d", train_type="ift", max_seq_length=64)
    chatml = make_tokenizer(CHATML)
    first = prepare(c, chatml, cache_dir=tmp_path / "cache")
    calls["n"] = 0
    assert prepare(c, chatml, cache_dir=tmp_path / "cache").report["cache"]["hit"] and calls["n"] == 0

    other = copy.deepcopy(chatml)
    other.chat_template = CHATML.replace("message['role'] + '\n'", "message['role'] + ':\n'")
    assert other.chat_template != CHATML and other.get_vocab() == chatml.get_vocab()
    second = prepare(c, other, cache_dir=tmp_path / "cache")
    assert not second.report["cache"]["hit"] and second.report["cache"]["key"] != first.report["cache"]["key"]
    assert calls["n"] > 0, "the chats were tokenized again"
    assert second.report["ift"]["chat_template"] == other.chat_template
    assert not np.array_equal(first.train.tokens, second.train.tokens), "the new template shows in the rows"

    calls["n"] = 0
    plain = copy.deepcopy(chatml)
    plain.chat_template = None  # no template of its own: the default one is used, another key again
    third = prepare(c, plain, cache_dir=tmp_path / "cache")
    assert not third.report["cache"]["hit"] and calls["n"] > 0
    assert third.report["ift"]["chat_template_source"] == "default"


@pytest.fixture
def general(tmp_path):
    root = tmp_path / "general"
    root.mkdir()
    for i in range(6):
        (root / f"{i}.txt").write_text(" ".join(f"gen{(i * 7 + k) % 400}" for k in range(60)))
    return root


def test_mixture_ratio_and_general_corpus_are_part_of_the_key(corpus, general, wtok, calls, tmp_path):
    cache = tmp_path / "cache"

    def mixed(ratio: float):
        return cfg(data=corpus, max_seq_length=8, mixture={"general": str(general), "ratio": ratio})

    first = prepare(mixed(0.8), wtok, cache_dir=cache).report
    calls["n"] = 0
    again = prepare(mixed(0.8), wtok, cache_dir=cache).report
    assert again["cache"] == {**first["cache"], "hit": True} and calls["n"] == 0, "unchanged: a hit"

    keys = {first["cache"]["key"]}
    ratio = prepare(mixed(0.5), wtok, cache_dir=cache).report
    assert not ratio["cache"]["hit"] and calls["n"] > 0 and ratio["cache"]["key"] not in keys
    assert abs(ratio["mixture"]["ratio_achieved"] - 0.5) < 0.05  # rebuilt for the new ratio, not reused
    keys.add(ratio["cache"]["key"])

    calls["n"] = 0
    (general / "0.txt").write_text(" ".join(f"gen{k}" for k in range(100, 160)))  # same size, new contents
    edited = prepare(mixed(0.8), wtok, cache_dir=cache).report
    assert not edited["cache"]["hit"] and calls["n"] > 0 and edited["cache"]["key"] not in keys
    keys.add(edited["cache"]["key"])

    calls["n"] = 0
    (general / "extra.txt").write_text(" ".join(f"gen{k}" for k in range(200, 260)))
    added = prepare(mixed(0.8), wtok, cache_dir=cache).report
    assert not added["cache"]["hit"] and calls["n"] > 0 and added["cache"]["key"] not in keys
    assert added["general_files_summary"]["read"] == 7

    calls["n"] = 0
    unmixed = prepare(cfg(data=corpus, max_seq_length=8), wtok, cache_dir=cache).report
    assert not unmixed["cache"]["hit"] and unmixed["cache"]["key"] not in keys
    # ratio 1 takes nothing from the general corpus, so the entry without mixing serves it
    assert prepare(mixed(1.0), wtok, cache_dir=cache).report["cache"] == {**unmixed["cache"], "hit": True}


def test_writes_are_atomic_and_failures_leave_nothing(corpus, wtok, tmp_path, monkeypatch):
    c = cfg(data=corpus, max_seq_length=8)
    cache = tmp_path / "cache"
    p = prepare(c, wtok, cache_dir=cache)
    entry = cache / p.report["cache"]["key"]
    assert sorted(f.name for f in entry.iterdir()) == ["report.json", "train_tokens.npy", "val_tokens.npy"]
    assert [d.name for d in cache.iterdir()] == [entry.name], "no temporary folders left behind"

    def boom(self, texts):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(TokenizerInfo, "encode_documents", boom)
    (corpus / "1.txt").write_text(doc("doc1", 50))
    with pytest.raises(ForgeError, match="unexpected RuntimeError") as e:
        prepare(c, wtok, cache_dir=cache)
    assert isinstance(e.value.__cause__, RuntimeError)
    assert [d.name for d in cache.iterdir()] == [entry.name], "a failed build leaves no entry and no temp folder"


def test_a_damaged_entry_is_rebuilt(corpus, wtok, tmp_path):
    c = cfg(data=corpus, max_seq_length=8)
    p = prepare(c, wtok, cache_dir=tmp_path / "cache")
    (tmp_path / "cache" / p.report["cache"]["key"] / "val_tokens.npy").unlink()
    again = prepare(c, wtok, cache_dir=tmp_path / "cache")
    assert not again.report["cache"]["hit"] and again.val.rows == p.val.rows


def test_default_cache_location_is_under_the_cache_dir(corpus, wtok, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGELLM_HOME", str(tmp_path / "home"))
    p = prepare(cfg(data=corpus, max_seq_length=8), wtok)
    assert p.report["cache"]["path"].startswith(str(tmp_path / "home" / ".cache" / "data"))

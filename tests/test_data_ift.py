"""IFT: every format, the chat template (own or default), the assistant mask token by token,
filtering with counts per reason, and packing whole examples with little padding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest_data import CHATML, cfg, make_tokenizer, make_word_tokenizer, write_jsonl

from forgellm.data import DEFAULT_CHAT_TEMPLATE, prepare, render_example
from forgellm.data.formats import detect
from forgellm.errors import ForgeError

MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is a drone?"},
    {"role": "assistant", "content": "A male bee."},
    {"role": "user", "content": "And the queen?"},
    {"role": "assistant", "content": "The colony mother."},
]


def ift_cfg(root, **kw):
    return cfg(data=root, train_type="ift", **{"max_seq_length": 128, "val_fraction": 0.5, **kw})


def examples_in(split) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tokens, mask) of each packed row's used part."""
    return [
        (np.asarray(t)[:n], np.asarray(m)[:n]) for t, m, n in zip(split.tokens, split.mask, split.lengths, strict=True)
    ]


def expected_chatml(tokenizer, messages) -> tuple[list[int], list[int]]:
    """Independent expectation: tokenize ChatML pieces separately; assistant content + <|im_end|> trained."""
    ids, mask = [], []

    def add(text: str, trained: int) -> None:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        mask.extend([trained] * len(piece))

    for m in messages:
        if m["role"] == "assistant":
            add("<|im_start|>assistant\n", 0)
            add(m["content"] + "<|im_end|>", 1)
            add("\n", 0)
        else:
            add(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n", 0)
    mask[0] = 0  # the first token of an example is never a target
    return ids, mask


def test_multi_turn_mask_token_by_token(tmp_path, tok):
    other = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hello to you."}]
    write_jsonl(tmp_path / "d" / "chat.jsonl", [{"messages": MULTI_TURN}, {"messages": other}])
    p = prepare(ift_cfg(tmp_path / "d"), tok, cache_dir=tmp_path / "cache")
    rows = examples_in(p.train) + examples_in(p.val)
    assert len(rows) == 2, "one example per row here (val_fraction 0.5)"
    for messages in (MULTI_TURN, other):
        ids, mask = expected_chatml(tok, messages)
        (match,) = [(t, m) for t, m in rows if t.tolist() == ids]
        assert match[1].tolist() == mask
    assert p.report["ift"]["chat_template_source"] == "tokenizer" and p.chat_template == CHATML


def test_mask_prompt_off_trains_everything(tmp_path, tok):
    write_jsonl(tmp_path / "d" / "c.jsonl", [{"messages": MULTI_TURN}, {"messages": MULTI_TURN[1:3]}])
    p = prepare(ift_cfg(tmp_path / "d", mask_prompt=False), tok, cache_dir=tmp_path / "cache")
    for _t, m in examples_in(p.train) + examples_in(p.val):
        assert m[0] == 0 and m[1:].all()


def test_default_template_when_the_tokenizer_has_none(tmp_path, tok_plain):
    write_jsonl(tmp_path / "d" / "c.jsonl", [{"messages": MULTI_TURN}, {"messages": MULTI_TURN[1:3]}])
    c = ift_cfg(tmp_path / "d")
    p = prepare(c, tok_plain, cache_dir=tmp_path / "cache")
    assert p.chat_template == DEFAULT_CHAT_TEMPLATE == p.report["ift"]["chat_template"]
    assert p.report["ift"]["chat_template_source"] == "default"
    assert any("default template" in n for n in p.report["notes"])
    shown = render_example(c, tok_plain, 0, prepared=p)
    trained = "".join(s["text"] for s in shown["segments"] if s["trained"])
    assert "<|assistant|>" not in trained and "<|user|>" not in trained
    assert "A male bee.<|im_end|>" in trained and "The colony mother.<|im_end|>" in trained


def test_every_format_is_detected_and_normalised(tmp_path, tok):
    d = tmp_path / "d"
    write_jsonl(d / "chat.jsonl", [{"messages": MULTI_TURN}])
    write_jsonl(d / "pc.jsonl", [{"prompt": "Say hi", "completion": "hi"}])
    write_jsonl(d / "alpaca.jsonl", [{"instruction": "Translate", "input": "abeille", "output": "bee"}])
    write_jsonl(
        d / "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}]
    )
    write_jsonl(d / "text.jsonl", [{"text": "plain text example"}])
    (d / "list.json").write_text(json.dumps([{"prompt": "p2", "completion": "c2"}]))
    p = prepare(ift_cfg(d, val_fraction=0.2), tok, cache_dir=tmp_path / "cache")
    formats = {k.rsplit("/", 1)[-1]: v for k, v in p.report["ift"]["formats"].items()}
    assert formats == {
        "chat.jsonl": "chat",
        "pc.jsonl": "completion",
        "alpaca.jsonl": "alpaca",
        "sharegpt.jsonl": "sharegpt",
        "text.jsonl": "text",
        "list.json": "completion",
    }
    assert p.report["examples"]["kept"] == 6
    texts = []
    c = ift_cfg(d, val_fraction=0.2)
    for split in ("train", "val"):
        for i in range(getattr(p, split).rows):
            texts.append(render_example(c, tok, i, split, prepared=p)["text"])
    joined = "".join(texts)
    assert "<|im_start|>user\nTranslate\n\nabeille<|im_end|>" in joined
    assert "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>" in joined
    assert "plain text example<|im_end|>" in joined  # text format: the document framing, EOS last
    assert detect({"unknown": 1}) is None


def test_filters_count_every_reason(tmp_path):
    wt = make_word_tokenizer()  # word-level: one word = one token, so lengths are exact
    d = tmp_path / "d"
    long_text = " ".join(f"w{i}" for i in range(40))
    good = [{"text": f"ex{i} w1 w2 w3"} for i in range(6)]
    write_jsonl(
        d / "t.jsonl",
        good
        + [
            {"text": "   "},  # empty
            {"text": long_text},  # overlong (41 tokens > 17)
            good[0],  # duplicate
            "{broken",  # malformed JSON
            {"messages": MULTI_TURN},  # another format in a text file: malformed
            {"text": 5},  # wrong type: malformed
            {"nothing": "here"},  # no known format: malformed
        ],
    )
    write_jsonl(
        d / "c.jsonl",
        [
            {"messages": [{"role": "user", "content": "w1"}, {"role": "assistant", "content": " "}]},  # empty answer
            {"messages": [{"role": "assistant", "content": "w1"}]},  # must open with user: malformed
            {"messages": [{"role": "user", "content": "w1"}, {"role": "tool", "content": "w2"}]},  # bad role
        ],
    )
    r = prepare(ift_cfg(d, max_seq_length=16), wt, cache_dir=tmp_path / "cache").report
    e = r["examples"]
    assert e["read"] == 16 and e["kept"] == 6
    assert e["dropped"] == {
        "malformed": 6,
        "empty": 2,
        "duplicate": 1,
        "overlong": 1,
        "template_error": 0,
        "no_trainable_tokens": 0,
    }
    lines = {(p["file"].rsplit("/", 1)[-1], p["line"]) for p in r["problems"]}
    assert {("t.jsonl", 7), ("t.jsonl", 8), ("t.jsonl", 10), ("t.jsonl", 11), ("c.jsonl", 1), ("c.jsonl", 3)} <= lines
    assert all(p["fix"] for p in r["problems"])
    overlong = next(p for p in r["problems"] if p["line"] == 8)
    assert "41 tokens" in overlong["what"] and "overlong: truncate" in overlong["fix"]

    t = prepare(ift_cfg(d, max_seq_length=16, overlong="truncate"), wt, cache_dir=tmp_path / "cache").report
    assert t["examples"]["dropped"]["overlong"] == 0 and t["examples"]["truncated"] == 1 and t["examples"]["kept"] == 7


def test_packing_keeps_examples_whole_and_reports_padding(tmp_path):
    wt = make_word_tokenizer()
    lengths = [3, 5, 9, 12, 16, 7, 4, 2, 10, 6, 8, 11]  # words; tokens = words + 1 (EOS)
    write_jsonl(
        tmp_path / "d" / "t.jsonl", [{"text": " ".join([f"ex{i}"] + ["w1"] * (n - 1))} for i, n in enumerate(lengths)]
    )
    p = prepare(ift_cfg(tmp_path / "d", max_seq_length=16, val_fraction=0.1), wt, cache_dir=tmp_path / "cache")
    eos, pad = wt.eos_token_id, wt.pad_token_id
    seen = []
    for split in (p.train, p.val):
        tokens, mask, lengths_used = np.asarray(split.tokens), np.asarray(split.mask), np.asarray(split.lengths)
        assert tokens.shape[1] == 17 and mask.dtype == np.uint8
        for row, row_mask, used in zip(tokens, mask, lengths_used, strict=True):
            assert (row[used:] == pad).all() and not row_mask[used:].any()  # padding is never trained
            pieces = np.split(row[:used], np.flatnonzero(row[:used] == eos)[:-1] + 1)
            for piece in pieces:
                assert piece[-1] == eos  # an example is never split across rows
                seen.append(len(piece))
        s = p.report["splits"]["train" if split is p.train else "val"]
        assert s["padding"] == tokens.size - lengths_used.sum()
        assert s["padding_fraction"] == pytest.approx(s["padding"] / tokens.size, abs=1e-5)
    assert sorted(seen) == sorted(n + 1 for n in lengths)
    train = p.report["splits"]["train"]
    assert train["rows"] <= -(-train["tokens_in_rows"] // 17) + 1  # best-fit: at most one row over the bound


def test_template_errors_and_fallback_are_handled(tmp_path):
    strict = make_tokenizer(None)
    # A template that refuses 3+ turns and marks the last message differently (so renderings of a
    # conversation are not prefixes of each other: the span search must take over).
    strict.chat_template = (
        "{% if messages|length > 4 %}{{ raise_exception('too many turns') }}{% endif %}"
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}"
        "{% if loop.last %}{{ '!' }}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    )
    d = tmp_path / "d"
    write_jsonl(
        d / "c.jsonl",
        [{"messages": MULTI_TURN}, {"messages": MULTI_TURN[1:4] + [MULTI_TURN[4]]}, {"messages": MULTI_TURN[1:3]}],
    )
    p = prepare(ift_cfg(d), strict, cache_dir=tmp_path / "cache")
    e = p.report["examples"]
    assert e["dropped"]["template_error"] == 1 and e["kept"] == 2
    assert any("too many turns" in q["what"] and q["line"] == 1 for q in p.report["problems"])
    assert p.report["ift"]["template_fallbacks"] >= 1
    c = ift_cfg(d)
    trained = "".join(
        s["text"]
        for split in ("train", "val")
        for s in render_example(c, strict, 0, split, prepared=p)["segments"]
        if s["trained"]
    )
    assert "A male bee." in trained and "What is a drone?" not in trained


def test_nothing_usable_stops_with_forge_error(tmp_path, tok):
    write_jsonl(tmp_path / "d" / "c.jsonl", ["{bad", {"prompt": "x", "completion": ""}])
    with pytest.raises(ForgeError, match="no usable instruction examples"):
        prepare(ift_cfg(tmp_path / "d"), tok, cache_dir=tmp_path / "cache")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("raw text")
    with pytest.raises(ForgeError, match="no usable instruction examples"):
        prepare(ift_cfg(tmp_path / "e"), tok, cache_dir=tmp_path / "cache")

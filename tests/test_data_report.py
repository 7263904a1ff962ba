"""The report as people see it (format_report, the CLI's data command) and rows as the model sees them."""

from __future__ import annotations

import json

import pytest
from conftest_data import cfg, doc, make_tokenizer, write_jsonl

from forgellm.data import data_command, format_report, load_tokenizer, prepare, render_example
from forgellm.data.report import REPORT_KEYS
from forgellm.errors import ForgeError


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    for i in range(6):
        (root / f"{i}.txt").write_text(doc(f"doc{i}", 40 + i))
    (root / "x.txt").write_bytes(b"\x00" * 50)
    (root / "d.jsonl").write_text('{"text": "doc7 w1"}\n{broken\n')
    return root


def test_format_report_shows_what_a_user_needs(corpus, wtok, tmp_path):
    r = prepare(cfg(data=corpus, max_seq_length=8), wtok, cache_dir=tmp_path / "cache").report
    text = format_report(r)
    for expected in (
        "Files: 8 found, 7 read, 1 skipped",
        "skipped",
        "binary file",
        "Documents: 7 kept of 7 read",
        "none on both sides",
        "remainder left out",
        "Yield:",
        "Lengths (tokens per document)",
        "d.jsonl:2: not valid JSON",
        "fix:",
        "Cache: built",
    ):
        assert expected in text, expected
    assert format_report({}).startswith("Data report")  # tolerant of partial reports (e.g. from the UI)
    assert set(r) == set(REPORT_KEYS), "the documented schema is the real one"


def test_render_example_cpt_marks_the_first_token_as_context(corpus, wtok, tmp_path):
    c = cfg(data=corpus, max_seq_length=8)
    p = prepare(c, wtok, cache_dir=tmp_path / "cache")
    shown = render_example(c, wtok, 0, prepared=p)
    assert shown["tokens"] == 9 and shown["trained_tokens"] == 8 and shown["padding_tokens"] == 0
    assert [s["kind"] for s in shown["segments"]] == ["context", "trained"]
    with pytest.raises(ForgeError, match="does not exist"):
        render_example(c, wtok, p.train.rows, prepared=p)
    with pytest.raises(ForgeError, match="unknown split"):
        render_example(c, wtok, 0, split="test", prepared=p)


def test_render_example_ift_shows_prompt_answer_and_padding(tmp_path):
    tok = make_tokenizer()
    write_jsonl(
        tmp_path / "d" / "c.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"Question {i}?"},
                    {"role": "assistant", "content": f"Answer {i}."},
                ]
            }
            for i in range(3)
        ],
    )
    c = cfg(data=tmp_path / "d", train_type="ift", max_seq_length=200, val_fraction=0.3)
    shown = render_example(c, tok, 0, "val", prepared=prepare(c, tok, cache_dir=tmp_path / "cache"))
    kinds = [s["kind"] for s in shown["segments"]]
    assert kinds[0] == "context" and "trained" in kinds and kinds[-1] == "padding"
    trained = [s["text"] for s in shown["segments"] if s["trained"]]
    assert all(t.startswith("Answer") and t.endswith("<|im_end|>") for t in trained)
    assert shown["padding_tokens"] > 0


def test_data_command_text_and_json(corpus, wtok, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGELLM_HOME", str(tmp_path / "home"))
    c = cfg(data=corpus, max_seq_length=8)
    assert "Yield:" in data_command(c, tokenizer=wtok)
    report = json.loads(data_command(c, as_json=True, tokenizer=wtok))
    assert report["cache"]["hit"] is True and report["train_type"] == "cpt"
    # The model folder is found exactly as training finds it: a folder without config.json is refused
    # the same way, and a model folder gives its tokenizer.
    folder = tmp_path / "tok"
    wtok.save_pretrained(folder)
    with pytest.raises(ForgeError, match="not a model folder"):
        load_tokenizer(cfg(data=corpus, model=str(folder)))
    (folder / "config.json").write_text('{"model_type": "llama"}')
    loaded = load_tokenizer(cfg(data=corpus, model=str(folder)))
    assert loaded.eos_token == "<eos>"
    with pytest.raises(ForgeError, match="not found"):
        load_tokenizer(cfg(data=corpus, model=str(tmp_path / "no-such-model")))


def test_data_command_builds_a_missing_builtin_model(tmp_path):
    """On a fresh clone `forgellm data configs/cpt-tiny.yaml` works: the tiny model is built on first use."""
    from helpers import run_cli

    home = tmp_path / "fresh-home"
    proc = run_cli("data", "configs/cpt-tiny.yaml", "--json", env={"FORGELLM_HOME": str(home)})
    report = json.loads(proc.stdout)
    assert report["train_type"] == "cpt" and report["splits"]["train"]["rows"] > 0
    assert (home / "models" / "tiny" / "config.json").is_file()


def test_a_tokenizer_without_eos_is_refused_clearly(corpus, tmp_path):
    from conftest_data import new_word_tokenizer

    tok = new_word_tokenizer()
    tok.eos_token = None
    with pytest.raises(ForgeError, match="no end-of-sequence token") as e:
        prepare(cfg(data=corpus), tok, cache_dir=tmp_path / "cache")
    assert e.value.fix

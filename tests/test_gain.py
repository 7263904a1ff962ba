"""Gain and forgetting of a real short tiny run: every kept checkpoint's domain figure is its logged
validation loss, the general text is held out, the warning names the best-balanced checkpoint, the
result is written to the run folder and shown in the Monitoring tab; the held-out general documents of
a mixture are those the pipeline did not train on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from test_probes import train_tiny, write_corpus

from forgellm import charts, config, paths, runs
from forgellm.evaluation import Measure, encode_texts, load_model, read_documents
from forgellm.gain import GainRow, balanced_step, forgetting_warnings, general_set, measure_gain, read_gain

GENERAL_TOKENS = 256  # small shapes: the cap on general text measured per model


@pytest.fixture(scope="module")
def run_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three kept checkpoints: 10, 20 and 30."""
    out = tmp_path_factory.mktemp("gain")
    overrides = ["iters=30", "learning_rate=1e-2", "steps_per_eval=10", "save_every=10", "keep_last=3"]
    return train_tiny(out, write_corpus(out / "corpus"), *overrides)


@pytest.fixture(scope="module")
def report(run_dir: Path):
    return measure_gain(run_dir, max_general_tokens=GENERAL_TOKENS, max_probe_items=8)


def test_each_checkpoint_is_measured_and_its_domain_figure_is_its_logged_loss(run_dir: Path, report) -> None:
    logged = {r.step: r.loss for r in runs.read_metrics(run_dir) if r.split == "val"}
    assert [r.step for r in report.rows] == [None, 10, 20, 30] == [None, *runs.checkpoint_steps(run_dir)]
    for row in report.rows:
        assert row.domain.loss == pytest.approx(logged[row.step or 0], rel=1e-5)  # base = the step-0 figure
        assert row.domain.stderr_unit == "documents" and row.domain.units == 3  # the 3 validation records
        assert row.general.tokens == GENERAL_TOKENS and row.general.stderr_unit == "tokens"  # within one document
        assert row.probes is not None and row.probes.items == report.probe_items > 0
    base = report.rows[0]
    for row in report.rows[1:]:
        assert row.domain_change == pytest.approx(row.domain.perplexity / base.domain.perplexity - 1)
        assert row.general_change == pytest.approx(row.general.perplexity / base.general.perplexity - 1)
    assert [r.is_best for r in report.rows] == [False, *[s == runs.best_step(run_dir) for s in (10, 20, 30)]]
    assert report.general_held_out and "dataset/general" in report.general_data  # no mixture: the shipped sample
    assert read_gain(run_dir) == report  # written to the run folder
    assert json.loads((run_dir / runs.GAIN_FILE).read_text())["rows"][1]["step"] == 10


def test_the_general_text_is_what_the_module_says(run_dir: Path, report) -> None:
    """The shipped general sample, in seeded document order, cut at the cap: the base model's general figure
    equals scoring those tokens directly."""
    import mlx.core as mx

    from forgellm.training.session import load_run_config

    cfg = load_run_config(run_dir)
    model, tokenizer = load_model("tiny")
    texts = read_documents([paths.dataset_dir() / "general"]).texts
    order = np.random.default_rng(cfg.seed).permutation(len(texts))
    stream, _ = encode_texts([texts[i] for i in order], tokenizer)
    stream = stream[: GENERAL_TOKENS + 1]
    L, nll = cfg.max_seq_length, []
    for start in range(0, GENERAL_TOKENS, L):  # windows of L + 1 tokens at stride L, as in training
        ids = stream[start : start + L + 1]
        logits = model(mx.array(ids[:-1])[None]).astype(mx.float32)[0]
        logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        nll += (-logp[np.arange(len(ids) - 1), ids[1:]]).tolist()
    assert report.rows[0].general.loss == pytest.approx(float(np.mean(nll)), rel=1e-5)


def test_the_warning_names_the_best_balanced_checkpoint(run_dir: Path, report) -> None:
    """With a threshold between the checkpoints' general changes, some are over it: the warning lists
    exactly those, and the best balance is the lowest domain perplexity among the others."""
    changes = sorted(r.general_change for r in report.rows[1:])
    assert changes[0] != changes[-1]
    threshold = (changes[0] + changes[-1]) / 2
    over = [r for r in report.rows[1:] if r.general_change > threshold]
    within = [r for r in report.rows[1:] if r.general_change <= threshold]
    expected = min(within, key=lambda r: r.domain.perplexity).step
    assert balanced_step(report.rows, threshold) == expected
    (warning,) = forgetting_warnings(report.rows, threshold, expected)
    listed = warning.split(": forgetting.")[0]
    for row in report.rows[1:]:
        assert (f"step {row.step} (" in listed) == (row in over)
    assert f"Best balance: step {expected}" in warning and f"--checkpoint {expected}" in warning
    # The CLI prints the table, the warning and the balance.
    proc = run_cli("eval", "--gain", str(run_dir), "--threshold", repr(threshold), "--max-general-tokens", "256")
    assert "warning: general perplexity rose more than" in proc.stdout
    assert f"best balance: step {expected}" in proc.stdout and "probe accuracy" in proc.stdout


def row(step: int | None, domain_loss: float, general_loss: float) -> GainRow:
    def m(loss: float) -> Measure:
        return Measure(loss, 100, 0.01, "documents", 2)

    base_domain, base_general = 3.0, 2.0
    changes = (np.exp(domain_loss - base_domain) - 1, np.exp(general_loss - base_general) - 1)
    return GainRow("base" if step is None else f"step {step}", step, m(domain_loss), m(general_loss), *changes)


def test_balance_when_every_checkpoint_or_none_is_within_the_threshold() -> None:
    rows = [row(None, 3.0, 2.0), row(10, 2.5, 2.05), row(20, 2.2, 2.3), row(30, 2.1, 2.4)]
    assert (
        balanced_step(rows, 0.10) == 10
        and "step 20 (+35.0%), step 30 (+49.2%)" in forgetting_warnings(rows, 0.10, 10)[0]
    )
    assert balanced_step(rows, 0.50) == 30 and forgetting_warnings(rows, 0.50, 30) == []
    assert balanced_step(rows, 0.01) is None
    assert "No checkpoint stays within the threshold" in forgetting_warnings(rows, 0.01, None)[0]


def test_the_monitoring_and_chat_tabs_show_the_stored_result(run_dir: Path, report, tmp_path: Path, monkeypatch):
    import gradio as gr

    from forgellm import choices
    from forgellm.ui import chat, gain_section, monitoring

    monkeypatch.setenv("FORGELLM_HOME", str(tmp_path))  # an app home whose runs/ lists only this run
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "gain-run").symlink_to(run_dir)
    findings, table, figure = gain_section._stored_gain("gain-run")
    stored = read_gain(run_dir)  # the last measurement (the CLI's, in the test above)
    headers, rows = stored.table()
    assert table == {"headers": headers, "data": rows} and "best balance" in findings
    gr.Dataframe(interactive=False).postprocess(table)  # a value the widget takes
    assert [t.name for t in figure.data][:2] == ["domain (validation split)", "general text"]
    assert list(figure.data[1].y) == [r.general.perplexity for r in stored.rows]
    assert gain_section._stored_gain(None) == [gr.skip()] * 3
    with pytest.warns(UserWarning, match="no such run"):  # the toast, outside a running app
        message = gain_section._measure_gain("no-such-run")[0]  # and the message in place
    assert "no such run" in message
    with gr.Blocks() as demo:
        tab = monitoring.build(gr.Timer(2.0), demo)
    assert tab.gain is not None and tab.gain.measure.value == "Measure gain and forgetting"
    with gr.Blocks() as demo:  # the Chat tab: the same section, bound to its adapter picker
        chat_tab = chat.build(demo)
    assert chat_tab.gain is not None and chat_tab.gain.measure.value == "Measure gain and forgetting"
    assert "Choose an adapter run" in gain_section._stored_gain(choices.NO_ADAPTER)[0]
    assert charts.gain_figure(None).layout.annotations[0].text == "not measured yet"


def general_docs(folder: Path, count: int) -> Path:
    """`count` distinct general documents of about 60 tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        text = f"Note {i} on rivers. " + " ".join(
            f"The river number {i} runs past mill {j} to the sea." for j in range(5)
        )
        (folder / f"g{i:02d}.txt").write_text(text)
    return folder


def contains(stream: np.ndarray, ids: np.ndarray) -> bool:
    view = np.lib.stride_tricks.sliding_window_view(stream, len(ids))
    return bool((view == ids).all(axis=1).any())


@pytest.mark.parametrize("ratio", [0.8, 0.3])
def test_held_out_general_documents_of_a_mixture_were_never_trained_on(tiny_model: Path, tmp_path: Path, ratio) -> None:
    """Ratio 0.8 needs a quarter of the domain's tokens of general text: most general documents stay unused
    and are the held-out set. Ratio 0.3 uses every general document (and the shipped sample is in the
    domain here): the set is then a seeded share of them, marked as not held out."""
    from forgellm.data import prepare

    domain = write_corpus(tmp_path / "domain")
    shipped = paths.dataset_dir() / "general"
    sets = ["max_seq_length=32", "val_fraction=0.25", f"mixture.general={general_docs(tmp_path / 'general', 12)}"]
    data = f"data=[{domain}, {shipped}]" if ratio == 0.3 else f"data={domain}"
    cfg = config.load("configs/cpt-tiny.yaml", [*sets, data, f"mixture.ratio={ratio}"])
    _, tokenizer = load_model("tiny")
    prepared = prepare(cfg, tokenizer)
    train = np.concatenate([prepared.train.tokens[0], *[r[1:] for r in prepared.train.tokens[1:]]])
    chosen = general_set(cfg, tokenizer, prepared.report)
    general = read_documents([tmp_path / "general"])
    heads = {t: encode_texts([t], tokenizer)[0][:6] for t in general.texts}  # "Note 7 on rivers.": unique
    if ratio == 0.8:
        assert chosen.held_out and 0 < len(chosen.texts) < len(general.texts)
        assert not any(contains(train, heads[t]) for t in chosen.texts)  # never in a training row
        used = [t for t in general.texts if t not in chosen.texts]
        # Used ones are (the last one may be cut short, or fall in the split's unused remainder).
        assert sum(contains(train, heads[t]) for t in used) >= len(used) - 1
    else:
        assert prepared.report["mixture"]["general_repeats"] > 1
        assert not chosen.held_out and "used in training" in chosen.note and "trained on" in chosen.source
        assert len(chosen.texts) == 3  # ceil(val_fraction 0.25 x 12 documents)
        assert all(contains(train, heads[t]) for t in chosen.texts)


def test_the_model_card_carries_the_measured_table(run_dir: Path, report, tmp_path: Path) -> None:
    from forgellm.gain import read_gain
    from forgellm.publish.card import write_card
    from forgellm.publish.fuse import fuse_run

    readme = write_card(fuse_run(run_dir, tmp_path / "fused"))
    card = readme.read_text()
    assert "## Gain and forgetting" in card
    headers, rows = read_gain(run_dir).table()  # what is stored now (other tests re-measure with other options)
    assert rows
    assert "| " + " | ".join(headers) + " |" in card
    assert all(f"| {row[0]} | {row[1]} |" in card for row in rows), card

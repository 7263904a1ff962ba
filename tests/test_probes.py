"""Knowledge probes on a real short run of the tiny model that memorised a small corpus: items are what
forgellm/probes.py says they are (deterministic, the prompt is the text before the span, the span occurs
in the training split), scoring equals a hand computation, and the tuned model beats the base."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from forgellm import config, launcher
from forgellm.probes import MIN_WORDS_BEFORE, ProbeItem, make_items, run_documents, run_items, score_items

# Facts repeated across documents: whatever a validation document says, the training documents say too.
FACTS = [
    "The Alder apiary keeps 14 hives on the east slope of Marrow Hill.",
    "Tamsin Rooke opens each hive every 9 days during the swarming season.",
    "In August every hive at Alder gives about 23 kilograms of heather honey.",
    "The colonies winter on 18 kilograms of stores under a sheltering hedge.",
    "Rooke treats varroa with oxalic acid when counts pass 3 mites per hundred bees.",
    "A queenright colony at Alder draws foundation within 6 days of a nectar flow.",
    "The Marrow Hill queens come from a Buckfast line raised by Edwin Parsley.",
    "Swarm cells are broken down and the strongest queen cell goes into a nucleus.",
]
FAST = ["max_seq_length=32", "batch_size=4", "warmup_steps=2", "steps_per_report=10", "val_fraction=0.25"]


def write_corpus(folder: Path, documents: int = 12) -> Path:
    """`documents` short records, each four of the facts in turn (12 records: each fact in 6 of them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        facts = [FACTS[(i + k) % len(FACTS)] for k in range(4)]
        (folder / f"record_{i:02d}.txt").write_text(f"Alder record {i + 1}.\n" + " ".join(facts) + "\n")
    return folder


def train_tiny(out: Path, data: Path, *overrides: str) -> Path:
    """Train the tiny model in this process (the trainer's own code, without a subprocess start-up)."""
    sets = [*FAST, f"data={data}", f"output_dir={out}", "run_name=run", *overrides]
    cfg = config.load("configs/cpt-tiny.yaml", sets)
    run_dir = launcher.create_run(cfg)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}  # the trainer installs its own
    try:
        from forgellm.training import train_run

        assert train_run(run_dir) == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return run_dir


@pytest.fixture(scope="module")
def memorised(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that memorised the corpus: full fine-tuning at a high learning rate, 60 steps (~10 epochs)."""
    out = tmp_path_factory.mktemp("probes")
    return train_tiny(out, write_corpus(out / "corpus"), "iters=60", "learning_rate=1e-2", "steps_per_eval=30")


def words_of(texts: list[str]) -> set[str]:
    return set(re.findall(r"\d+(?:[.,]\d+)*|[A-Za-z][A-Za-z'-]*[A-Za-z]", "\n".join(texts)))


def test_items_are_deterministic_and_what_the_docstring_says(memorised: Path) -> None:
    from forgellm.training.session import load_run_config

    docs = run_documents(load_run_config(memorised))
    assert len(docs.val) == 3 and len(docs.train) == 9  # ceil(0.25 x 12) by document, as the pipeline splits
    items = run_items(memorised)
    assert items == run_items(memorised) and len(items) >= 5  # deterministic
    assert make_items(docs.val, docs.train, seed=1, max_items=4) != make_items(
        docs.val, docs.train, seed=2, max_items=4
    )
    trained = words_of(docs.train)
    for item in items:
        text = docs.val[item.document]
        assert text[item.start : item.start + len(item.prompt) + len(item.span)] == item.prompt + item.span
        assert item.span.startswith(" ") and item.span.strip() in trained  # the span occurs in the training split
        word = item.span.strip()
        assert {"number": word[0].isdigit(), "name": word[0].isupper(), "term": word.islower()}[item.kind]
        sentence = re.split(r"(?<=[.!?])\s+", item.prompt)[-1]
        assert len(sentence.split()) >= MIN_WORDS_BEFORE
    assert {"number", "name"} <= {i.kind for i in items}  # numbers and names are preferred where a sentence has them


def test_the_validation_documents_are_the_pipelines_validation_split(memorised: Path) -> None:
    """The probes' document split is the trainer's: the validation documents, tokenized as the pipeline
    does, are exactly the token stream of the run's validation windows."""
    from forgellm.data import prepare
    from forgellm.evaluation import encode_texts, load_model
    from forgellm.training.session import load_run_config

    cfg = load_run_config(memorised)
    _, tokenizer = load_model("tiny")
    val = prepare(cfg, tokenizer).val.tokens
    stream = np.concatenate([val[0], *[row[1:] for row in val[1:]]])
    expected, _ = encode_texts(run_documents(cfg).val, tokenizer)
    assert np.array_equal(stream, expected[: len(stream)])


def test_scoring_equals_a_hand_computation_on_one_item(memorised: Path) -> None:
    import mlx.core as mx

    from forgellm.evaluation import load_model

    model, tokenizer = load_model("tiny", memorised / "checkpoints" / "60")
    item = ProbeItem("The Alder apiary keeps 14 hives on the east slope of", " Marrow", "name", 0, 0)
    score = score_items(model, tokenizer, [item])
    prompt = tokenizer.encode(item.prompt, add_special_tokens=False)
    span = tokenizer.encode(item.span, add_special_tokens=False)
    ids = prompt + span
    logits = model(mx.array(ids)[None]).astype(mx.float32)[0]
    logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    gold = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(span))
    greedy = list(prompt)
    for _ in span:  # greedy decoding, one token at a time
        greedy.append(int(mx.argmax(model(mx.array(greedy)[None])[0, -1]).item()))
    assert score.items == 1 and score.logprobs[0] == pytest.approx(gold, abs=1e-4)
    assert score.exact[0] == (greedy[len(prompt) :] == span)
    assert score.mean_logprob == pytest.approx(gold, abs=1e-4) and score.accuracy == float(score.exact[0])


def test_a_model_that_memorised_the_domain_beats_the_base(memorised: Path) -> None:
    """Through the CLI: `eval --probes RUN --json`."""
    report = json.loads(run_cli("eval", "--probes", str(memorised), "--json").stdout)
    base, tuned = report["base"], report["tuned"]
    assert base["items"] == tuned["items"] == len(report["items"]) >= 5
    assert tuned["mean_logprob"] > base["mean_logprob"] + 3.0, (base["mean_logprob"], tuned["mean_logprob"])
    assert tuned["accuracy"] > base["accuracy"]
    assert [ProbeItem(**i) for i in report["items"]] == run_items(memorised)

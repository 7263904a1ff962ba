"""The app: built without launching, its form and list logic (forgellm.forms, forgellm.choices), its handlers,
and one real launch.

Every test that could write points FORGELLM_HOME at a temporary folder (runs/ and models/ live there).
Handlers are called directly with the library's slow parts (trainer launch, model loading) faked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from forgellm import choices, config, forms, inference, paths, run_summary, runs
from forgellm.config import TrainConfig, field_help
from forgellm.errors import ConfigError, ForgeError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FORGELLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_run(name: str, state: str = "completed", steps: tuple[int, ...] = (10, 20), model: str = "tiny") -> Path:
    """A run folder as the trainer leaves it (status, config, metrics, log, checkpoints)."""
    run_dir = paths.runs_dir() / name
    (run_dir / runs.CHECKPOINTS).mkdir(parents=True)
    status = {
        "state": state,
        "step": steps[-1] if steps else 0,
        "total_steps": 20,
        "started_at": f"2026-01-01T00:00:{len(name):02d}",
        "epoch": 1.5,
        "tokens_per_sec": 1234.0,
        "eta_s": 75,
        "best_val_loss": 2.5,
        "best_step": 10,
        "pid": None,
    }
    if state == "failed":
        status["error"] = "validation loss became nan at step 20"
    (run_dir / runs.STATUS_FILE).write_text(json.dumps(status))
    (run_dir / runs.CONFIG_FILE).write_text(f"model: {model}\ntrain_type: cpt\n")
    (run_dir / runs.METRICS_FILE).write_text(
        "".join(
            json.dumps({"step": s, "split": "train", "loss": 3.0 - s / 100, "lr": 1e-3, "tokens_per_sec": 1000}) + "\n"
            for s in range(1, 21)
        )
        + json.dumps({"step": 10, "split": "val", "loss": 2.5})
        + "\n"
    )
    (run_dir / runs.LOG_FILE).write_text("".join(f"line {i}\n" for i in range(100)))
    for step in steps:
        ckpt = run_dir / runs.CHECKPOINTS / str(step)
        ckpt.mkdir()
        (ckpt / runs.TRAINER_STATE_FILE).write_text(json.dumps({"step": step}))
        (ckpt / runs.ADAPTER_CONFIG_FILE).write_text(json.dumps({"model": "/gone", "base_model": model}))
    return run_dir


def form_dict(cfg: TrainConfig, **changes) -> dict:
    values = dict(zip(forms.FORM_KEYS, forms.form_values(cfg), strict=True))
    values.update({k.replace("__", "."): v for k, v in changes.items()})
    return values


# --------------------------------------------------------------------------------------------------
# The Blocks, built without launching


@pytest.fixture(scope="module")
def app_config():
    from forgellm.ui import build_app

    return build_app().get_config_file()


def test_build_app_has_the_tabs(app_config):
    labels = [c["props"].get("label") for c in app_config["components"] if c["type"] == "tabitem"]
    assert labels == ["Training", "Dataset", "Monitoring", "Chat", "Publishing", "Models"]


def test_timer_sits_outside_the_tabs(app_config):
    # A gr.Timer inside a tab that was never opened does not tick.
    by_type = {c["type"]: c["id"] for c in app_config["components"]}

    def ids_under(node: dict) -> set[int]:
        return {node["id"], *(i for child in node.get("children", []) for i in ids_under(child))}

    def find(node: dict, wanted: int) -> dict | None:
        if node["id"] == wanted:
            return node
        return next((n for child in node.get("children", []) if (n := find(child, wanted))), None)

    tabs = find(app_config["layout"], by_type["tabs"])
    assert by_type["timer"] in ids_under(app_config["layout"]) and by_type["timer"] not in ids_under(tabs)


def test_training_form_has_every_config_key_grouped_from_the_config_tree():
    """Every leaf key of TrainConfig has a widget showing the chosen config's value, in the group its config
    field names; widget kinds, help and choices come from the tree (a new key needs no UI code)."""
    import gradio as gr

    from forgellm.ui import training

    with gr.Blocks() as demo:
        tab = training.build(gr.Timer(), demo)
    leaves = [k for k in field_help() if not any(other.startswith(k + ".") for other in field_help())]
    assert list(forms.FORM_KEYS) == leaves and len(leaves) >= 40
    assert {"run_name", "mixture.ratio", "early_stopping.overfit_threshold", "lr_schedule", "hosts"} <= set(leaves)
    base = forms.load_base(tab.config.value)
    for widget, key in zip(tab.form(), forms.FORM_KEYS, strict=True):
        assert widget.label == key and widget.info.startswith(field_help()[key][:20])
        assert widget.value == forms.to_widget(key, forms.get_key(base, key))
    kinds = {key: type(tab.fields[key]).__name__ for key in forms.FORM_KEYS}
    assert kinds["lr_schedule"] == "Radio" and tab.fields["lr_schedule"].choices == [
        (c, c) for c in ("cosine", "linear", "constant")
    ]
    assert kinds["grad_checkpoint"] == "Checkbox" and kinds["epochs"] == "Number" and kinds["hosts"] == "Textbox"
    assert kinds["mixture.general"] == "Dropdown" and tab.fields["data"].multiselect
    assert {f.group for f in forms.FORM_FIELDS} <= {g.name for g in forms.GROUPS}
    assert [g.name for g in forms.GROUPS if not g.open] == ["early_stopping", "checkpoints", "distributed", "other"]


def test_every_key_round_trips_through_the_form(tmp_path):
    """A config with every key changed from its default fills the form and comes back identical."""
    cfg = TrainConfig(
        model="smollm2-135m-instruct", train_type="ift", fine_tune_type="dora", num_layers=4,
        lora_parameters=config.LoraParameters(
            rank=4, scale=10.0, dropout=0.05, keys=["self_attn.q_proj", "self_attn.v_proj"]
        ),
        data=["dataset/beekeeping/handbook", "dataset/general"], text_field="body", val_fraction=0.2,
        max_seq_length=128, mixture=config.Mixture(general="dataset/general", ratio=0.7), mask_prompt=False,
        overlong="truncate", optimizer="sgd", learning_rate=2e-4, weight_decay=0.01, lr_schedule="linear",
        warmup_steps=5, min_learning_rate=1e-5, batch_size=2, grad_accumulation_steps=3, max_grad_norm=None,
        grad_checkpoint=True, iters=30, epochs=1.5, steps_per_report=2, steps_per_eval=5, val_batches=3,
        save_every=7, keep_last=3,
        early_stopping=config.EarlyStopping(patience=2, min_delta=0.01, overfit_threshold=0.2),
        seed=9, output_dir="runs", run_name="my-run", hosts=["127.0.0.1", "127.0.0.1"], hostfile=None,
        distributed_backend="mpi",
    )  # fmt: skip
    changed = {k for k in forms.FORM_KEYS if forms.get_key(cfg, k) != forms.get_key(TrainConfig(), k)}
    assert changed == set(forms.FORM_KEYS) - {"output_dir", "hostfile", "trust_remote_code"}
    values = dict(zip(forms.FORM_KEYS, forms.form_values(cfg), strict=True))
    assert values["hosts"] == "127.0.0.1, 127.0.0.1" and values["max_grad_norm"] is None
    overrides = forms.build_overrides(TrainConfig(), values)
    assert config.load(None, overrides) == cfg


def test_optional_fields_empty_to_null_and_lists_from_text():
    base = TrainConfig(epochs=2.0, run_name="named", lora_parameters=config.LoraParameters(keys=["a"]))
    values = form_dict(base, epochs=None, run_name="  ", lora_parameters__keys=" self_attn.q_proj ,, mlp.up_proj ")
    overrides = forms.build_overrides(base, values)
    cfg = config.load(None, [*(f"{k}={v}" for k, v in [("epochs", 2.0), ("run_name", "named")]), *overrides])
    assert (
        cfg.epochs is None and cfg.run_name is None and cfg.lora_parameters.keys == ["self_attn.q_proj", "mlp.up_proj"]
    )
    with pytest.raises(ForgeError, match="not a folder or file under dataset/"):
        forms.build_overrides(base, form_dict(base, mixture__general="/etc"))
    with pytest.raises(ForgeError, match="outside the project folder"):
        forms.build_overrides(base, form_dict(base, hostfile="/etc/hosts"))


def test_save_as_config_writes_every_key_and_never_overwrites_unasked(monkeypatch, tmp_path):
    monkeypatch.setattr(choices, "CONFIGS_DIR", tmp_path)
    cfg = TrainConfig(iters=33, mixture=config.Mixture(general="dataset/general", ratio=0.6))
    path = forms.save_config(cfg, "mine", based_on="configs/cpt-tiny.yaml")
    assert path == tmp_path / "mine.yaml" and config.load(path) == cfg
    assert path.read_text().startswith("# Written by ForgeLLM's Training tab from configs/cpt-tiny.yaml")
    with pytest.raises(ForgeError, match="already exists"):
        forms.save_config(TrainConfig(), "mine.yaml")
    assert config.load(path) == cfg  # untouched
    forms.save_config(TrainConfig(), "mine", overwrite=True)
    assert config.load(path) == TrainConfig()
    for bad in ("../x", "a/b", ".hidden", "", "   "):
        with pytest.raises(ForgeError, match="plain file name"):
            forms.save_config(cfg, bad)


def test_a_past_run_refills_the_form_without_its_name_or_folder(tmp_path):
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    old = TrainConfig(iters=12, learning_rate=5e-4, run_name="old-run", output_dir=str(tmp_path))
    (run_dir / runs.CONFIG_FILE).write_text(config.dump_yaml(old))
    base = TrainConfig()
    cfg = forms.run_config(run_dir, base)
    assert (cfg.iters, cfg.learning_rate) == (12, 5e-4) and cfg.run_name is None and cfg.output_dir == "runs"
    overrides = forms.build_overrides(base, dict(zip(forms.FORM_KEYS, forms.form_values(cfg), strict=True)))
    assert sorted(o.split("=")[0] for o in overrides) == ["iters", "learning_rate"]
    with pytest.raises(ForgeError, match="no config.yaml"):
        forms.run_config(tmp_path, base)


# --------------------------------------------------------------------------------------------------
# Form → overrides → config


def test_unchanged_form_gives_no_overrides():
    base = TrainConfig()
    assert forms.build_overrides(base, form_dict(base)) == []
    # Widget typing is not a change: a Number hands back 8.0 for batch_size 8, a Textbox may pad.
    assert forms.build_overrides(base, form_dict(base, batch_size=8.0, model=" tiny ")) == []


def test_only_changed_values_become_overrides_and_round_trip(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: tiny\niters: 50\nlearning_rate: 2e-4\nlora_parameters:\n  rank: 4\n")
    base = config.load(yaml_file)
    values = form_dict(
        base,
        iters=75,
        learning_rate=1e-05,
        lora_parameters__rank=16,
        model="123",
        train_type="ift",
        data=["dataset/instructions"],  # the multi-select's value
    )
    overrides = forms.build_overrides(base, values)
    assert [o.split("=")[0] for o in overrides] == [  # in the config tree's order
        "model",
        "train_type",
        "lora_parameters.rank",
        "data",
        "learning_rate",
        "iters",
    ]
    loaded = config.load(yaml_file, overrides)
    assert dict(zip(forms.FORM_KEYS, forms.form_values(loaded), strict=True)) == values
    assert loaded.model == "123"  # a name that looks like a number stays a string


def test_the_data_multiselect_gives_one_path_or_a_list():
    base = TrainConfig()
    assert forms.build_overrides(base, form_dict(base, data=["dataset/beekeeping"])) == []
    two = ["dataset/beekeeping/handbook", "dataset/general"]
    overrides = forms.build_overrides(base, form_dict(base, data=two))
    assert config.load(None, overrides).data == two
    assert set(two) <= set(choices.dataset_choices(two)) and choices.dataset_choices(["/data/a", "/data/b"])[:2] == [
        "/data/a",
        "/data/b",
    ]
    with pytest.raises(ForgeError, match="not a folder or file under dataset/"):
        forms.build_overrides(base, form_dict(base, data=["dataset/general", "/etc"]))


def test_emptied_or_invalid_fields_are_reported_not_defaulted():
    base = TrainConfig()
    overrides = forms.build_overrides(base, form_dict(base, iters=None))
    assert overrides == ["iters=null"]  # an emptied field must not silently fall back to the default
    with pytest.raises(ConfigError, match="iters"):
        config.load(None, overrides)
    overrides = forms.build_overrides(base, form_dict(base, learning_rate=-1.0, val_fraction=2.0))
    with pytest.raises(ConfigError) as e:
        config.load(None, overrides)
    keys = {p.split(":")[0] for p in e.value.problems}
    assert {"learning_rate", "val_fraction"} <= keys


def test_form_keys_and_literal_choices_come_from_the_config_tree():
    assert set(forms.FORM_KEYS) <= set(field_help()) and set(forms.FORM_KEYS) == set(config.field_groups())
    assert forms.literal_choices("train_type") == ["cpt", "ift"]
    assert forms.key_type("lora_parameters.rank") is int


def test_config_choices(tmp_path):
    configs = choices.list_configs()
    assert configs[-1] == choices.DEFAULTS_CHOICE and "configs/cpt-tiny.yaml" in configs
    assert choices.config_path(choices.DEFAULTS_CHOICE) is None
    with pytest.raises(ForgeError):
        choices.config_path("../app.py")
    with pytest.raises(ForgeError):
        choices.config_path("configs/../tests/x.yaml")


# --------------------------------------------------------------------------------------------------
# Paths the UI may offer


def test_dataset_choices_never_escape_dataset(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "dataset" / "docs").mkdir(parents=True)
    (project / "dataset" / "docs" / "a.txt").write_text("hello")
    (project / "dataset" / ".hidden").mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    (project / "dataset" / "link").symlink_to(outside)
    monkeypatch.setattr(paths, "PROJECT_ROOT", project)

    found = choices.dataset_choices()
    assert found == ["dataset/docs", "dataset/docs/a.txt"]
    assert all(choices.is_dataset_path(c) for c in found)
    for bad in ("dataset/link", "dataset/../secret", str(outside), "/etc", "", "dataset/missing"):
        assert not choices.is_dataset_path(bad), bad
    base = TrainConfig(data="dataset/docs")
    with pytest.raises(ForgeError, match="not a folder or file under dataset/"):
        forms.build_overrides(base, form_dict(base, data="dataset/link"))
    # What the YAML file says is shown as is; only a value changed in the UI must come from dataset/.
    assert choices.dataset_choices("/data/mine")[0] == "/data/mine"


def test_real_dataset_choices_are_inside_dataset():
    root = paths.dataset_dir().resolve()
    found = choices.dataset_choices()
    assert "dataset/beekeeping" in found, found  # the shipped corpus is offered (an empty list proves nothing)
    for choice in found:
        assert (paths.PROJECT_ROOT / choice).resolve().is_relative_to(root)


@pytest.mark.parametrize("name", ["", "  ", "a/b", "a\\b", "..", "../x", "x..y", ".hidden", "tiny"])
def test_output_name_rejects_paths(name):
    with pytest.raises(ForgeError):
        choices.validate_output_name(name)


def test_output_name_accepts_a_plain_name(home):
    assert choices.validate_output_name(" my-model_v2 ") == home / "models" / "my-model_v2"
    (home / "models" / "taken").mkdir(parents=True)
    with pytest.raises(ForgeError, match="not written by ForgeLLM"):
        choices.validate_output_name("taken")
    (home / "models" / "fused-before").mkdir()
    (home / "models" / "fused-before" / "forgellm_fuse.json").write_text("{}")  # an earlier fuse output
    assert choices.validate_output_name("fused-before") == home / "models" / "fused-before"


def test_runs_checkpoints_and_adapters():
    make_run("20260101-000000-cpt-tiny", steps=(10, 20))
    make_run("20260102-000000-cpt-tiny-longer", steps=())
    names = [value for _label, value in choices.run_choices()]
    assert names == ["20260102-000000-cpt-tiny-longer", "20260101-000000-cpt-tiny"]  # newest first
    assert [v for _l, v in choices.adapter_choices()] == [choices.NO_ADAPTER, "20260101-000000-cpt-tiny"]
    assert choices.checkpoint_choices("20260101-000000-cpt-tiny") == ["best", "latest", "20", "10"]
    assert choices.checkpoint_choices(choices.NO_ADAPTER) == []
    assert choices.run_base_model("20260101-000000-cpt-tiny") == "tiny"
    # A run that was just started has an empty folder for a moment: it is still listed when asked for.
    (paths.runs_dir() / "20260104-000000-starting").mkdir()
    assert choices.run_choices(include="20260104-000000-starting")[0] == (
        "20260104-000000-starting (starting)",
        "20260104-000000-starting",
    )
    assert choices.resolve_run("20260104-000000-starting").name == "20260104-000000-starting"
    for bad in ("../x", "nope", "", None, ".x"):
        with pytest.raises(ForgeError):
            choices.resolve_run(bad)


def test_status_summary():
    run_dir = make_run("r1", state="completed")
    line = run_summary.status_summary(runs.summarize(run_dir))
    assert (
        "**completed**" in line
        and "step 20/20" in line
        and "1,234 tok/s" in line
        and "best val loss 2.5000 at step 10" in line
    )
    assert "ETA" not in line  # only while running
    # A 'running' run whose trainer is gone is shown as dead, with how to continue it.
    status = runs.read_status(run_dir)
    status.update(state="running", pid=2**22 + 12345, pid_start="1")
    runs.write_status(run_dir, status)
    dead = run_summary.status_summary(runs.summarize(run_dir))
    assert dead.startswith("**dead**") and f"--resume {run_dir}" in dead and "checkpoint 20" in dead
    failed = run_summary.status_summary(runs.summarize(make_run("r2", state="failed")))
    assert "validation loss became nan" in failed
    assert run_summary.format_duration(3725) == "1h 02m" and run_summary.format_duration(65) == "1m 05s"


def test_message_text_accepts_parts_and_strings():
    parts = [{"type": "text", "text": "Hello "}, {"type": "file", "file": {}}, {"type": "text", "text": "bees"}]
    assert inference.message_text(parts) == "Hello bees"
    assert inference.message_text("plain") == "plain"
    history = [{"role": "user", "content": parts}, {"role": "assistant", "content": "Hi", "metadata": {}}]
    assert inference.chat_messages(history) == [
        {"role": "user", "content": "Hello bees"},
        {"role": "assistant", "content": "Hi"},
    ]


# --------------------------------------------------------------------------------------------------
# Handlers, with the slow library parts faked


def test_start_passes_changed_fields_and_reports_problems(monkeypatch):
    from forgellm.ui import training

    calls = []

    def fake_start(cfg):
        calls.append(cfg)
        run_dir = make_run("20260103-000000-cpt-tiny", state="running")
        return SimpleNamespace(run_dir=run_dir, process=SimpleNamespace(pid=4242))

    monkeypatch.setattr(training.launcher, "start_in_background", fake_start)
    base = TrainConfig()
    values = form_dict(base, iters=5)
    message, run_update = training._start(choices.DEFAULTS_CHOICE, *values.values())
    assert [c.iters for c in calls] == [5] and calls[0] == TrainConfig(iters=5)  # resolved once, passed as is
    assert "`iters=5`" in message
    assert "20260103-000000-cpt-tiny" in message and run_update["value"] == "20260103-000000-cpt-tiny"

    bad = form_dict(base, iters=0, learning_rate=-1.0)
    with pytest.warns(UserWarning):  # gr.Warning outside a request falls back to warnings.warn
        message, run_update = training._start(choices.DEFAULTS_CHOICE, *bad.values())
    assert (
        "problem(s) in the config" in message
        and "iters: must be >= 1" in message
        and "learning_rate: must be > 0" in message
    )
    assert len(calls) == 1


def test_stop_on_a_finished_run_says_so():
    from forgellm.ui import training

    make_run("done", state="completed")
    assert "not running (state: completed)" in training._stop("done")


def test_monitoring_refresh_is_cheap_and_silent():
    import gradio as gr

    from forgellm.ui import monitoring

    count = 3 + 4 + 3 * monitoring.BEST_SHOWN + 3  # status, cards, warnings, 4 charts, best rows, steps, log, seen
    assert monitoring._show(None, None) == [gr.skip()] * count
    run_dir = make_run("watched")
    out = monitoring._show("watched", None)
    status, cards, warnings, loss, perplexity, lr, throughput = out[:7]
    best, steps, log, seen = out[7:-3], out[-3], out[-2], out[-1]
    assert "completed" in status and "20 / 20" in cards and "100%" in cards
    assert {t.name for t in loss.data} >= {"train", "validation"} and log.splitlines()[-1] == "line 99"
    assert len(log.splitlines()) == monitoring.LOG_LINES
    assert steps == [10] and "step 10" in best[0]["value"] and best[1]["visible"] and not best[3]["visible"]
    assert monitoring._show("watched", seen) == [gr.skip()] * count  # nothing changed: nothing sent
    with open(run_dir / runs.METRICS_FILE, "a") as f:
        f.write(json.dumps({"step": 21, "split": "train", "loss": 1.0}) + "\n")
    assert monitoring._show("watched", seen)[0] != gr.skip()
    assert monitoring._show("watched", seen, True, 0.6)[3].layout.yaxis.type == "log"  # the log-scale toggle


def test_best_checkpoint_buttons_open_chat_and_publishing_with_the_step_chosen():
    from forgellm import ui

    make_run("ranked", steps=(10, 20))
    tabs, model, adapter, checkpoint = ui._open_in_chat(0, "ranked", [10])
    assert tabs.selected == "chat" and model["value"] == "tiny" and adapter["value"] == "ranked"
    assert checkpoint["value"] == "10" and "20" in checkpoint["choices"]
    tabs, run, checkpoint, name = ui._open_in_publishing(0, "ranked", [10])
    assert tabs.selected == "publishing" and run["value"] == "ranked" and checkpoint["value"] == "10"
    assert name == "ranked-step10-fused"


def test_monitoring_compares_exports_and_deletes_runs(home):
    from forgellm.ui import monitoring

    make_run("one")
    two = make_run("two")
    (two / runs.CONFIG_FILE).write_text("model: tiny\ntrain_type: cpt\nlearning_rate: 0.01\n")
    loss, perplexity, summary, config_diff = monitoring._compare(["one", "two"])
    assert [t.name for t in loss.data][:2] == ["one", "two"] and [row[0] for row in summary["data"]] == ["one", "two"]
    assert ["learning_rate", "(absent)", "0.01"] in config_diff["data"]
    with pytest.warns(UserWarning, match="two or more"):
        monitoring._compare(["one"])

    files, message = monitoring._export("one")
    assert sorted(Path(f).name for f in files) == ["loss.png", "metrics.csv", "report.html"]
    assert all(Path(f).is_relative_to(home / "reports" / "one") for f in files) and "reports/one/" in message

    with pytest.warns(UserWarning, match="tick the confirmation box"):
        monitoring._delete("one", False)
    assert (home / "runs" / "one").is_dir()
    message, run_update, confirm = monitoring._delete("one", True)
    assert "Deleted" in message and not (home / "runs" / "one").exists() and confirm is False
    assert [c[1] for c in run_update["choices"]] == ["two"]


def chat_inputs(message, history=(), model="tiny", adapter="none", max_tokens=20):
    """The Chat tab's reply handler inputs: message, session, chat, base chat, side by side, model, adapter,
    checkpoint, system prompt, template, then the settings in GenerationSettings order."""
    from forgellm.ui import chat

    settings = {**dataclasses.asdict(inference.GenerationSettings()), "max_tokens": max_tokens}
    state = [list(history), [], False, model, adapter, None, "", ""]
    return [message, "session", *state, *(settings[name] for name in chat.SETTING_FIELDS)]


def test_chat_streams_and_reports_errors(monkeypatch):
    from forgellm.ui import chat

    closed = []

    @dataclasses.dataclass
    class Loaded:
        label: str = "tiny"
        context_length: int | None = None
        chat_template: str | None = None

        def prompt_for(self, messages, system="", template=None):
            return inference.Prompt(json.dumps(messages), [1, 2, 3], "test format")

    def fake_stream(loaded, prompt, settings, stop=None):
        try:
            for i, piece in enumerate(["Bees ", "make ", "honey."]):
                yield SimpleNamespace(
                    text=piece, token=i, generation_tokens=i + 1, generation_tps=42.0, prompt_tokens=3,
                    prompt_tps=300.0, peak_memory=0.01, finish_reason="stop" if i == 2 else None,
                )  # fmt: skip
        finally:
            closed.append(True)

    monkeypatch.setattr(chat.inference, "load_for_chat", lambda model, adapter=None, checkpoint="best": Loaded())
    monkeypatch.setattr(chat.inference, "stream", fake_stream)
    monkeypatch.setattr(chat, "UPDATE_EVERY_S", 0.0)  # every token redrawn (pacing has its own test)
    monkeypatch.setattr(chat, "_models_loaded", lambda *_a: False)  # the real cache may hold tiny already
    history = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
    ]
    steps = list(chat._respond(*chat_inputs("What do bees make?", history)))
    final_chat, base_chat, textbox, info, prompt, memory = steps[-1]
    assert final_chat[-1] == {"role": "assistant", "content": "Bees make honey."}
    assert final_chat[0] == {"role": "user", "content": "hi"} and textbox == ""
    assert "prompt 3 tokens" in info and "3 tokens" in info and "42.0 tokens/s" in info and "end of answer" in info
    assert "first token 0.01 s" in info and "peak 10.0 MB" in info
    assert "test format" in prompt and '"What do bees make?"' in prompt and "MLX memory" in memory
    assert len(steps) == 1 + 1 + 3 + 1 and closed == [True]  # loading, generating, 3 tokens, done

    # Clear cancels the handler: closing its generator mid-stream closes the model stream (frees the lock).
    closed.clear()
    gen = chat._respond(*chat_inputs("again"))
    next(gen), next(gen), next(gen)
    gen.close()
    assert closed == [True]

    def refuse(model, adapter=None, checkpoint="best"):
        raise ForgeError("this adapter was trained on tiny, not on smollm", "runs/x", "choose tiny as the base model")

    monkeypatch.setattr(chat.inference, "load_for_chat", refuse)
    with pytest.warns(UserWarning):
        steps = list(chat._respond(*chat_inputs("hi", model="smollm2-135m-instruct")))
    chat_after, base_after, textbox, info, *_ = steps[-1]
    assert chat_after == [] and textbox == "hi" and "choose tiny as the base model" in info


def test_publishing_rejects_a_bad_name_before_fusing(monkeypatch):
    from forgellm.ui import publishing

    make_run("r")
    monkeypatch.setattr(publishing, "fuse_run", lambda *a, **k: pytest.fail("must not fuse"))
    with pytest.warns(UserWarning):
        message, folders = publishing._fuse("r", "best", "../escape", False)
    assert "not a plain folder name" in message


# --------------------------------------------------------------------------------------------------
# app.py


def _import_app():
    import importlib.util

    spec = importlib.util.spec_from_file_location("forgellm_app_main", paths.PROJECT_ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_args_prefers_flags_then_spaces_env():
    app = _import_app()
    args = app.parse_args([], env={})
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}
    assert (app.parse_args([], env=env).host, app.parse_args([], env=env).port) == ("0.0.0.0", 7861)
    args = app.parse_args(["--host", "127.0.0.2", "--port", "9000", "--share"], env=env)
    assert (args.host, args.port, args.share) == ("127.0.0.2", 9000, True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_and_exits_on_sigterm(home):
    """`python app.py` serves the UI, runs MLX on OpenBLAS (Linux mlx-cpu), and exits 0 on SIGTERM."""
    from forgellm import platform

    port = _free_port()
    env = {
        **os.environ,
        "FORGELLM_HOME": str(home),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=paths.PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = opener.open(f"http://127.0.0.1:{port}/", timeout=5).status
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, proc.stdout.read().decode() if proc.poll() is not None else "no answer in 90 s"
        if sys.platform.startswith("linux") and platform._mlx_uses_reference_blas():
            maps = Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
            mapped = {Path(line.split()[-1]).name for line in maps if line.split()[-1].startswith("/")}
            # The OpenBLAS ForgeLLM loads has plain cblas names (numpy's libscipy_openblas64_ does not count).
            assert any(name.startswith("libopenblas") for name in mapped), sorted(mapped)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("value", ["/etc", "~/models/x", "../outside", "models/../../etc", "C:evil"])
def test_model_choice_never_reaches_outside_the_project(value: str) -> None:
    from forgellm.errors import ForgeError

    with pytest.raises(ForgeError):
        choices.check_model_choice(value)


@pytest.mark.parametrize("value", ["tiny", "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "org/name"])
def test_model_choice_accepts_builtins_and_hub_ids(value: str) -> None:
    assert choices.check_model_choice(value) == value


def test_every_run_list_follows_the_runs_folder_without_a_reload():
    """The app-wide tick refreshes the run lists of every tab only when the runs folder changed, follows a
    run that starts running, and drops a deleted run."""
    import os

    import gradio as gr

    from forgellm import launcher, procs
    from forgellm.ui import _sync_lists

    def sync(seen, train_run=None, past_run=None, monitor_run=None, compared=(), adapter="none", publish_run=None):
        return _sync_lists(seen, train_run, past_run, monitor_run, list(compared), adapter, publish_run, "tiny", None)

    make_run("a-old")
    first = sync(None)
    seen = first[0]
    assert [name for name, *_ in seen[0]] == ["a-old"] and first[3]["value"] == "a-old"
    assert sync(seen, monitor_run="a-old") == [gr.skip()] * 9  # nothing changed: nothing sent

    live = make_run("b-live", state="running", steps=())
    status = json.loads((live / runs.STATUS_FILE).read_text())
    status.update(pid=os.getpid(), pid_start=procs.process_start_time(os.getpid()), started_at="2026-01-02T00:00:00")
    (live / runs.STATUS_FILE).write_text(json.dumps(status))  # "running", by this (alive) process
    updates = sync(seen, monitor_run="a-old", compared=["a-old"])
    train_run, past_run, monitor_run, compared, adapter, publish_run = updates[1:7]
    assert monitor_run["value"] == "b-live" and train_run["value"] == "b-live"  # the new run is followed
    assert [c[1] for c in monitor_run["choices"]] == ["b-live", "a-old"] and [c[1] for c in compared["choices"]]
    assert [c[1] for c in publish_run["choices"]] == ["a-old"]  # no checkpoint yet: nothing to publish
    assert [c[1] for c in adapter["choices"]] == ["none", "a-old"]
    # A selection still listed is not sent back: the browser keeps whatever it holds now.
    assert "value" not in adapter and "value" not in compared and "value" not in past_run

    status["state"] = "completed"
    (live / runs.STATUS_FILE).write_text(json.dumps(status))
    launcher.delete_run(paths.runs_dir(), "a-old")
    updates = sync(updates[0], "b-live", "a-old", "b-live", ["a-old", "b-live"], "a-old", "a-old")
    assert [c[1] for c in updates[3]["choices"]] == ["b-live"] and "value" not in updates[3]
    assert updates[2]["value"] is None and updates[5]["value"] == "none" and updates[6]["value"] is None
    assert updates[4]["value"] == ["b-live"]  # a deleted run leaves the comparison


def test_the_tick_never_undoes_a_selection_made_while_it_ran(tmp_path):
    """The tick's inputs are what the browser held when it left; a model folder fused meanwhile (its folder
    appearing is what the tick reports) stays selected: the tick sends the new choices, not its stale None.
    (Pushing right after a fuse found the folder unselected.)"""
    import shutil

    import gradio as gr

    from forgellm.publish import workflow
    from forgellm.ui import _sync_lists

    seen = _sync_lists(None, *[None] * 4, "none", None, "tiny", None)[0]
    fused = paths.models_dir() / "m-fused"
    fused.mkdir(parents=True)
    try:
        (fused / workflow.PROVENANCE_FILE).write_text("{}")  # what marks a folder ForgeLLM wrote
        folder_update = _sync_lists(seen, *[None] * 4, "none", None, "tiny", None)[-1]
        assert folder_update != gr.skip() and "m-fused" in folder_update["choices"]
        assert "value" not in folder_update  # a choices-only update: the browser keeps "m-fused"
        gone = _sync_lists(seen, *[None] * 4, "none", None, "tiny", "vanished")[-1]
        assert gone["value"] is None  # a selection that is no longer listed is cleared
    finally:
        shutil.rmtree(fused)


def test_start_refuses_data_outside_dataset_named_by_the_config_file_itself(monkeypatch, tmp_path):
    """A config file whose own `data` (unchanged in the form) points outside dataset/ is refused at Start."""
    from forgellm.ui import training

    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "dataset").mkdir()
    (project / "configs" / "escape.yaml").write_text("model: tiny\ndata: /etc\nmixture:\n  general: ../outside\n")
    monkeypatch.setattr(paths, "PROJECT_ROOT", project)
    monkeypatch.setattr(choices, "CONFIGS_DIR", project / "configs")
    monkeypatch.setattr(training.launcher, "start_in_background", lambda cfg: pytest.fail("must not start"))
    cfg = config.load(project / "configs" / "escape.yaml")
    with pytest.warns(UserWarning):
        message, _run = training._start("configs/escape.yaml", *form_dict(cfg).values())
    assert "dataset/" in message and "/etc" in message


def test_the_estimate_beside_start_describes_the_form():
    """Estimate memory answers for the run the form describes (a changed batch size changes the activations)."""
    from forgellm.ui import training

    base = TrainConfig(batch_size=2, max_seq_length=64)
    small = training._estimate(choices.DEFAULTS_CHOICE, *form_dict(base).values())
    large = training._estimate(choices.DEFAULTS_CHOICE, *form_dict(base, batch_size=16).values())
    assert small.startswith("**Memory: about") and "activations (2 x 64 tokens)" in small and "fits in" in small
    assert "activations (16 x 64 tokens)" in large and small != large


def test_a_long_open_tab_keeps_only_the_apps_own_components():
    """Gradio keeps the component it makes for each output update under a new id in the session's config
    (a tab left on Monitoring grew ~2.5 MB a minute); each timer tick drops those, and only those."""
    from types import SimpleNamespace

    import gradio as gr

    from forgellm.ui import build_app
    from forgellm.ui.common import forget_replaced_components

    demo = build_app()
    session = demo.state_holder["tab-1"]  # a browser session, as Gradio makes it on the first event
    app_ids = set(session.blocks_config.blocks)
    assert app_ids == set(demo.blocks)
    made_for_updates = [gr.Markdown("step 10", render=False), gr.Dropdown(["a"], render=False)]
    for component in made_for_updates:  # what Gradio's postprocessing leaves behind
        session.blocks_config.blocks[component._id] = component
        session.config_values[component._id] = {"props": {}}
    assert forget_replaced_components(demo, SimpleNamespace(session_hash="tab-1")) == 4
    assert set(session.blocks_config.blocks) == app_ids and set(session.config_values) <= app_ids
    assert forget_replaced_components(demo, SimpleNamespace(session_hash="another-tab")) == 0  # never created
    assert "another-tab" not in demo.state_holder
    assert forget_replaced_components(demo, None) == 0
    # Gradio's queue keeps a record per event for its monitoring page: 1,000 here, not 10,000 (~2 h of a tab).
    assert demo._queue.ANALYTICS_MAX_EVENTS == 1000

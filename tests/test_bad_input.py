"""Bad input, end to end: a corpus of broken configs, data files, paths and arguments.

Each CLI case runs the real `python -m forgellm ...` in a subprocess and must end with a non-zero exit, a
message that says what is wrong and where (file, line, key or flag) with a fix, and no traceback. Where the
app takes the same input, its handlers are called as tests/test_ui.py does: a message is shown, nothing is
raised, nothing is started.

Small text cases live in tests/data/bad/; binary files, archives renamed .txt, a 50 MB line, FIFOs, link loops
and unreadable files are made at test time in tmp_path.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT, run_cli

BAD = Path(__file__).parent / "data" / "bad"
CPT = "configs/cpt-tiny.yaml"
IFT = "configs/ift-tiny.yaml"
FIFTY_MB = 50 * 1024 * 1024
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------------------------------
# Bad files, made on demand


def binary_bytes() -> bytes:
    return bytes(range(256)) * 8


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello bees " * 100)
    return buffer.getvalue()


def gzip_bytes() -> bytes:
    return gzip.compress(b"hello bees " * 100, mtime=0)


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def link_loop(folder: Path) -> Path:
    """a -> b -> a: neither a file nor a folder, and Path.resolve() raises on it (Python 3.11)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loop-b").symlink_to(folder / "loop-a")
    (folder / "loop-a").symlink_to(folder / "loop-b")
    return folder / "loop-a"


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def fifty_mb_jsonl_line(path: Path) -> Path:
    """One 50 MB JSONL line whose string is never closed: read, rejected with its line, not tokenized."""
    with open(path, "wb") as f:
        f.write(b'{"text": "')
        f.write(b"a" * FIFTY_MB)
        f.write(b"\n")
    return path


def fifty_mb_config(path: Path) -> Path:
    with open(path, "wb") as f:
        f.write(b"model: " + b"x" * FIFTY_MB + b"\n")
    return path


def folder_of(tmp: Path, name: str, files: dict[str, bytes | str]) -> Path:
    for file, content in files.items():
        write(tmp / name / file, content)
    return tmp / name


def bad_file(name: str) -> bytes:
    return (BAD / name).read_bytes()


def csv_and_html(tmp: Path) -> Path:
    return folder_of(tmp, "d", {"a.csv": bad_file("no-text-column.csv"), "b.html": bad_file("no-visible-text.html")})


def loop_beside_binary(tmp: Path) -> Path:
    """A folder holding a link loop (never listed: not a file) and a binary file (listed, skipped)."""
    write(tmp / "d" / "x.txt", binary_bytes())
    return link_loop(tmp / "d").parent


def unreadable(tmp: Path) -> Path:
    path = write(tmp / "d" / "locked.txt", "text")
    path.chmod(0)
    return path.parent


# --------------------------------------------------------------------------------------------------
# The CLI corpus: each case builds its files in a scratch folder and returns the arguments


@dataclass
class Case:
    argv: Callable[[Path], list[str]]
    expect: tuple[str, ...]  # what the message must name (the problem and its place)
    needs_user: bool = False  # a case root cannot have (root reads any file)


def data(path: Path | str, config: str = CPT, *more: str) -> list[str]:
    return ["data", config, "--set", f"data={path}", *more]


CONFIG_CASES = {
    "config not UTF-8": Case(
        lambda t: ["data", str(write(t / "latin1.yaml", b"iters: 3\nmodel: caf\xe9\n"))],
        ("not UTF-8", "latin1.yaml:2", "re-save it as UTF-8"),
    ),
    "config is a zip renamed .yaml": Case(
        lambda t: ["data", str(write(t / "c.yaml", zip_bytes()))], ("binary, not YAML", "c.yaml")
    ),
    "config is gzip bytes": Case(lambda t: ["data", str(write(t / "c.yaml", gzip_bytes()))], ("binary",)),
    "config is a folder": Case(lambda t: ["data", str(t)], ("is a folder, not a YAML file",)),
    "config is a run folder": Case(
        lambda t: ["data", str(folder_of(t, "run", {"config.yaml": "model: tiny\n"}))],
        ("is a folder", "train --resume"),
    ),
    "config is a FIFO": Case(lambda t: ["data", str(fifo(t / "c.yaml"))], ("named pipe (FIFO)", "c.yaml")),
    "config is a link loop": Case(lambda t: ["data", str(link_loop(t))], ("symbolic link loop", "loop-a")),
    "config missing": Case(lambda t: ["data", str(t / "nope.yaml")], ("config file not found", "nope.yaml")),
    "config with a 50 MB line": Case(
        lambda t: ["data", str(fifty_mb_config(t / "huge.yaml"))], ("52.4 MB", "a small YAML file", "huge.yaml")
    ),
    "unknown keys": Case(
        lambda t: ["data", str(BAD / "unknown-keys.yaml")],
        ("unknown-keys.yaml:3 (lr)", "'learning_rate'", "did you mean 'learning_rate'", "not 'alpha'"),
    ),
    "wrong types": Case(
        lambda t: ["data", str(BAD / "wrong-types.yaml")],
        ("wrong-types.yaml:2 (iters): expected int, got 'many'", "expected bool, got 'maybe'", "did you mean 'ift'"),
    ),
    "zero and negative values": Case(
        lambda t: ["data", str(BAD / "zero-negative.yaml")],
        ("(iters): must be >= 1, got 0", "(batch_size): must be >= 1", "(learning_rate): must be > 0", "(keep_last)"),
    ),
    "learning_rate .inf": Case(
        lambda t: ["data", str(BAD / "inf-learning-rate.yaml")],
        ("inf-learning-rate.yaml:2 (learning_rate): must be a finite number",),
    ),
    "nan and inf in nested keys": Case(
        lambda t: ["data", str(BAD / "nan-values.yaml")],
        ("(learning_rate): must be a finite", "(lora_parameters.dropout): must be a finite", "(mixture.ratio)"),
    ),
    "duplicate key": Case(
        lambda t: ["data", str(BAD / "duplicate-key.yaml")],
        ("duplicate-key.yaml:4 (iters)", "set twice (lines 2 and 4)"),
    ),
    "config is a list": Case(lambda t: ["data", str(BAD / "not-a-mapping.yaml")], ("must be a mapping",)),
    "YAML syntax": Case(lambda t: ["data", str(BAD / "bad-syntax.yaml")], ("bad-syntax.yaml:3", "starts on line 2")),
    "python tag": Case(lambda t: ["data", str(BAD / "python-tag.yaml")], ("python-tag.yaml:2", "not valid YAML")),
    "alias cycle": Case(lambda t: ["data", str(BAD / "alias-cycle.yaml")], ("alias-cycle.yaml:2", "cycle")),
}

OVERRIDE_CASES = {
    "--set a value, then a key inside it": Case(
        lambda t: ["data", CPT, "--set", "iters=3", "--set", "iters.x=1"], ("--set", "inside 'iters'", "value 3")
    ),
    "--set without =": Case(lambda t: ["data", CPT, "--set", "iters"], ("not key=value", "--set iters=100")),
    "--set with an empty key part": Case(lambda t: ["data", CPT, "--set", "a..b=1"], ("empty key name",)),
    "--set an int too large": Case(lambda t: ["data", CPT, "--set", "iters=1e400"], ("(iters): expected int",)),
    "--set -inf": Case(lambda t: ["data", CPT, "--set", "max_grad_norm=-.inf"], ("(max_grad_norm): must be a finite",)),
    "--set a negative rank": Case(
        lambda t: ["data", CPT, "--set", "lora_parameters.rank=-4"], ("(lora_parameters.rank): must be >= 1",)
    ),
}

DATA_CASES = {
    "binary file": Case(
        lambda t: data(write(t / "d" / "weights.txt", binary_bytes())), ("weights.txt: binary file", "no usable")
    ),
    "zip renamed .txt": Case(lambda t: data(write(t / "d" / "notes.txt", zip_bytes())), ("notes.txt: binary file",)),
    "gzip renamed .txt": Case(lambda t: data(write(t / "d" / "notes.txt", gzip_bytes())), ("notes.txt: binary file",)),
    "JSONL that is not UTF-8": Case(
        lambda t: data(write(t / "d" / "latin1.jsonl", b'{"text": "caf\xe9"}\n')),
        ("latin1.jsonl:1: line is not UTF-8 text", "re-save the file as UTF-8"),
    ),
    "UTF-16 byte-order mark on bytes that are not UTF-16": Case(
        lambda t: data(write(t / "d" / "odd.txt", b"\xff\xfeA\x00B")), ("odd.txt: has a utf-16 byte-order mark",)
    ),
    "empty and whitespace-only files": Case(
        lambda t: data(folder_of(t, "d", {"empty.txt": bad_file("empty.txt"), "ws.txt": bad_file("whitespace.txt")})),
        ("empty.txt: empty file", "ws.txt: empty file"),
    ),
    "one 50 MB line": Case(
        lambda t: data(fifty_mb_jsonl_line(t / "huge.jsonl")), ("huge.jsonl:1: not valid JSON", "complete JSON object")
    ),
    "malformed JSONL": Case(
        lambda t: data(BAD / "malformed.jsonl"), ("malformed.jsonl:1: not valid JSON", "2 more problem(s)")
    ),
    "wrong-typed JSONL": Case(
        lambda t: data(BAD / "wrong-types.jsonl"), ("wrong-types.jsonl:1: 'text' must be a string, got int",)
    ),
    "CSV without the text column, HTML without text": Case(
        lambda t: data(csv_and_html(t)),
        ("a.csv: no 'text' column", "set text_field", "b.html: HTML page has no visible text"),
    ),
    "data path is a link loop": Case(lambda t: data(link_loop(t)), ("data path is a symbolic link loop", "loop-a")),
    "data path is a FIFO": Case(lambda t: data(fifo(t / "pipe")), ("data path is a named pipe (FIFO)", "pipe")),
    "data path is a device": Case(lambda t: data(os.devnull), ("data path is a character device", os.devnull)),
    "data path missing": Case(lambda t: data(t / "gone"), ("data path does not exist", "gone")),
    "data folder with no files": Case(
        lambda t: data(folder_of(t, "d", {".hidden.txt": "text"})), ("no files found", "start with '.'")
    ),
    "data folder: a link loop beside a binary file": Case(
        lambda t: data(loop_beside_binary(t)), ("1 file(s) found", "x.txt: binary file")
    ),
    "unreadable file": Case(
        lambda t: data(unreadable(t)), ("locked.txt: cannot read: Permission denied",), needs_user=True
    ),
    "IFT: malformed and wrong-typed records": Case(
        lambda t: data(BAD / "ift-malformed.jsonl", IFT), ("no usable instruction examples", "ift-malformed.jsonl:1")
    ),
    "IFT: raw text files": Case(
        lambda t: data(write(t / "d" / "notes.txt", "bees"), IFT), ("notes.txt: instruction tuning reads .jsonl",)
    ),
    "mixture.general all rejected": Case(
        lambda t: data(
            "dataset/beekeeping",
            CPT,
            "--set",
            f"mixture.general={write(t / 'g' / 'x.txt', zip_bytes()).parent}",
            "--set",
            "mixture.ratio=0.5",
        ),
        ("mixture.general:", "x.txt: binary file"),
    ),
}

TRAIN_CASES = {
    "train with a missing model": Case(
        lambda t: ["train", CPT, "--set", "model=no-such-model", "--set", f"output_dir={t / 'runs'}"],
        ("model 'no-such-model' not found", "built-in model"),
    ),
    "train with a model folder that is not a model": Case(
        lambda t: ["train", CPT, "--set", f"model={t}", "--set", f"output_dir={t / 'runs'}"],
        ("no config.json", "model folder"),
    ),
    "--resume a folder that is not a run": Case(
        lambda t: ["train", "--resume", str(t)], ("not a run folder", "python -m forgellm runs")
    ),
    "--resume a config file": Case(
        lambda t: ["train", "--resume", CPT], ("config file, not a run folder", f"python -m forgellm train {CPT}")
    ),
    "--resume a missing folder": Case(lambda t: ["train", "--resume", str(t / "gone")], ("no such run folder",)),
    "--resume a link loop": Case(lambda t: ["train", "--resume", str(link_loop(t))], ("symbolic link loop",)),
    "train a config and --resume": Case(lambda t: ["train", CPT, "--resume", str(t)], ("not both",)),
    "eval --gain of a folder that is not a run": Case(
        lambda t: ["eval", "--gain", str(t)], ("--gain", "not a run folder", "forgellm runs")
    ),
    "eval --batch-size 0": Case(
        lambda t: ["eval", "--model", "tiny", "--data", str(t), "--batch-size", "0"],
        ("--batch-size: must be at least 1",),
    ),
    "eval --max-seq-length -5": Case(
        lambda t: ["eval", "--model", "tiny", "--data", str(t), "--max-seq-length", "-5"], ("--max-seq-length",)
    ),
    "generate --temp nan": Case(
        lambda t: ["generate", "--model", "tiny", "--prompt", "hi", "--temp", "nan"], ("--temp: must be a finite",)
    ),
    "generate --max-tokens 0": Case(
        lambda t: ["generate", "--model", "tiny", "--prompt", "hi", "--max-tokens", "0"],
        ("max_tokens: must be at least 1",),
    ),
    "generate --adapter that is not a run": Case(
        lambda t: ["generate", "--model", "tiny", "--adapter", str(t), "--prompt", "hi"], ("not a run folder",)
    ),
}

CLI_CASES = {**CONFIG_CASES, **OVERRIDE_CASES, **DATA_CASES, **TRAIN_CASES}


def assert_refused(proc: subprocess.CompletedProcess, expect: tuple[str, ...]) -> None:
    """Non-zero, no traceback, and a message naming what and where, with a fix (argparse: its usage line)."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    for text in expect:
        assert text in proc.stderr, (text, proc.stderr[-3000:])
    assert "Fix:" in proc.stderr or "usage:" in proc.stderr, proc.stderr[-3000:]
    assert len(proc.stderr) < 20_000, "a message must stay readable: a huge value is cut short"


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_refuses_bad_input_with_a_message(name: str, tmp_path: Path, tiny_model: Path) -> None:
    case = CLI_CASES[name]
    if case.needs_user and IS_ROOT:
        pytest.skip("root reads files whatever their permissions")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_refused(run_cli(*case.argv(scratch), check=False, timeout=240), case.expect)


def test_corpus_is_large_enough() -> None:
    assert len(CLI_CASES) + len(APP_CASES) >= 40
    assert len(CLI_CASES) >= 40


def test_train_with_a_missing_model_leaves_no_run_folder(tmp_path: Path) -> None:
    """The model is looked up before the run folder is made: a typo leaves no failed run behind."""
    proc = run_cli("train", CPT, "--set", "model=no-such-model", "--set", f"output_dir={tmp_path}", check=False)
    assert_refused(proc, ("model 'no-such-model' not found",))
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_data_is_all_rejected_says_why_per_file(tmp_path: Path, tiny_model: Path) -> None:
    """The run folder records every rejected file and its reason, not "the report lists why" with no report."""
    corpus = folder_of(tmp_path, "d", {"a.txt": zip_bytes(), "b.jsonl": bad_file("malformed.jsonl")})
    proc = run_cli("train", CPT, "--set", f"data={corpus}", "--set", f"output_dir={tmp_path / 'runs'}", check=False)
    assert proc.returncode != 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    detail = json.loads((run_dir / "status.json").read_text())["error_detail"]
    assert "a.txt: binary file" in detail and "b.jsonl:1: not valid JSON" in detail
    report = json.loads((run_dir / "data_report.json").read_text())  # what was read, in the run folder too
    assert "a.txt" in json.dumps(report) and "b.jsonl" in json.dumps(report)
    assert "Traceback" not in proc.stderr and "a.txt: binary file" in (run_dir / "train.log").read_text()


def test_data_prints_the_report_of_every_rejected_file(tmp_path: Path, tiny_model: Path) -> None:
    """The message names the first ten files; the report `forgellm data` prints beside it names all of them."""
    corpus = folder_of(tmp_path, "d", {f"f{i:02}.txt": binary_bytes() for i in range(12)})
    proc = run_cli(*data(corpus, CPT, "--json"), check=False)
    assert_refused(proc, ("f09.txt: binary file", "and 2 more file(s): the data report lists them all"))
    report = json.loads(proc.stdout)
    assert report["files_summary"]["skipped"] == 12 and "no usable documents" in report["error"]


def test_prepare_attaches_the_report_of_rejected_files(tmp_path: Path, wtok) -> None:
    """The DataError carries a data report (files, problems, the error) for the run folder's data_report.json."""
    from conftest_data import cfg

    from forgellm.data import prepare
    from forgellm.errors import DataError

    corpus = folder_of(tmp_path, "d", {"a.txt": binary_bytes(), "b.jsonl": bad_file("wrong-types.jsonl")})
    with pytest.raises(DataError) as e:
        prepare(cfg(data=corpus), wtok, cache_dir=tmp_path / "cache")
    report = e.value.report
    assert [f["status"] for f in report["files"]] == ["skipped", "read"]
    assert report["files_summary"]["skipped"] == 1 and report["problems_total"] == 5
    assert report["error"] == e.value.message and "b.jsonl:1: 'text' must be a string" in report["error"]


# --------------------------------------------------------------------------------------------------
# Mismatched adapters: an adapter trained on tiny, used with a differently shaped base


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad-input-runs")
    sets = ["fine_tune_type=lora", "iters=2", "max_seq_length=32", "batch_size=2", "steps_per_eval=2"]
    sets += ["save_every=2", "val_batches=1", f"output_dir={out}", "run_name=lora"]
    run_cli("train", CPT, *(arg for s in sets for arg in ("--set", s)))
    return out / "lora"


@pytest.fixture(scope="module")
def other_base(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model cut to 2 blocks: a base of another shape."""
    from test_eval import two_layer_base

    return two_layer_base(tiny_model, tmp_path_factory.mktemp("other") / "tiny-2-blocks")


ADAPTER_COMMANDS = {
    "generate": ["generate", "--prompt", "hi"],
    "chat": ["chat"],
    "eval": ["eval", "--data", "val"],
}


@pytest.mark.parametrize("command", list(ADAPTER_COMMANDS))
def test_an_adapter_from_another_base_is_refused(command: str, lora_run: Path, other_base: Path) -> None:
    argv = [*ADAPTER_COMMANDS[command], "--model", str(other_base), "--adapter", str(lora_run)]
    proc = subprocess.run(
        [sys.executable, "-m", "forgellm", *argv],
        input="",  # chat reads stdin: the refusal must come before it
        capture_output=True,
        text=True,
        timeout=240,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert_refused(proc, ("this adapter was trained on", "tiny", str(lora_run)))


# --------------------------------------------------------------------------------------------------
# The app: the same input through the Training and Dataset tabs' handlers


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder of its own (configs/, dataset/) for the handlers, which read only inside one."""
    from forgellm import choices, paths
    from forgellm.data import ingest, report

    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    (root / "dataset").mkdir()
    for module in (paths, ingest, report):
        monkeypatch.setattr(module, "PROJECT_ROOT", root)
    monkeypatch.setattr(choices, "CONFIGS_DIR", root / "configs")
    return root


def form(**changes) -> list:
    from forgellm import forms
    from forgellm.config import TrainConfig

    values = dict(zip(forms.FORM_KEYS, forms.form_values(TrainConfig()), strict=True))
    values.update({k.replace("__", "."): v for k, v in changes.items()})
    return list(values.values())


def refuse_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    from forgellm.ui import training

    monkeypatch.setattr(training.launcher, "start_in_background", lambda cfg: pytest.fail("must not start"))


START_CASES = {
    "learning_rate inf": (dict(learning_rate=float("inf")), "learning_rate: must be a finite number"),
    "lora dropout nan": (dict(lora_parameters__dropout=float("nan")), "lora_parameters.dropout: must be a finite"),
    "zero iters, negative batch": (dict(iters=0, batch_size=-2), "iters: must be >= 1"),
    "text in a number field": (dict(warmup_steps="ten"), "warmup_steps: expected int"),
}

CONFIG_FILES = {
    "not UTF-8": b"iters: 3\nmodel: caf\xe9\n",
    "zip bytes": zip_bytes(),
    **{name: bad_file(name) for name in ("wrong-types.yaml", "duplicate-key.yaml", "nan-values.yaml")},
    **{name: bad_file(name) for name in ("python-tag.yaml", "alias-cycle.yaml", "bad-syntax.yaml")},
}

DATASET_FILES = {
    "weights.txt": binary_bytes(),
    "notes.txt": zip_bytes(),
    "notes2.txt": gzip_bytes(),
    "empty.txt": b"",
    "odd.txt": b"\xff\xfeA\x00B",
    "broken.jsonl": bad_file("malformed.jsonl"),
}

APP_CASES = [*START_CASES, *CONFIG_FILES, "dataset scan", "dataset report", "dataset link loop"]


@pytest.mark.parametrize("name", list(START_CASES))
def test_start_shows_the_problem_and_starts_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from forgellm import choices
    from forgellm.ui import training

    refuse_launch(monkeypatch)
    changes, expected = START_CASES[name]
    with pytest.warns(UserWarning):  # gr.Warning outside a request falls back to warnings.warn
        message, _run = training._start(choices.DEFAULTS_CHOICE, *form(**changes))
    assert expected in message and "Traceback" not in message


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_a_broken_config_file_is_a_message_in_the_training_tab(name: str, project: Path) -> None:
    from forgellm.ui import training

    write(project / "configs" / "broken.yaml", CONFIG_FILES[name])
    with pytest.warns(UserWarning):
        *fields, message = training._load_config("configs/broken.yaml")
    assert "broken.yaml" in message and "Fix:" in message and "Traceback" not in message


def test_the_dataset_tab_lists_why_each_bad_file_is_skipped(project: Path) -> None:
    from forgellm.ui import dataset

    folder_of(project / "dataset", "bad", DATASET_FILES)
    rows, summary = dataset._scan("dataset/bad", "cpt")
    reasons = {Path(row[0]).name: row[4] for row in rows}
    assert reasons["weights.txt"] == reasons["notes.txt"] == reasons["notes2.txt"] == "binary file (not text)"
    assert reasons["empty.txt"] == "empty file" and summary == "6 file(s) as cpt: 2 read, 4 skipped."


def test_the_dataset_report_names_every_rejected_file(project: Path, tiny_model: Path) -> None:
    from forgellm import choices
    from forgellm.ui import dataset

    folder_of(project / "dataset", "bad", DATASET_FILES)
    with pytest.warns(UserWarning):
        message, _plot = dataset._report(choices.DEFAULTS_CHOICE, *form(data=["dataset/bad"]))
    assert "no usable documents (6 file(s) found" in message
    for expected in ("weights.txt: binary file", "empty.txt: empty file", "odd.txt: has a utf-16 byte-order mark"):
        assert expected in message
    assert "broken.jsonl:1: not valid JSON" in message and "Traceback" not in message


def test_the_dataset_tab_refuses_a_link_loop(project: Path) -> None:
    from forgellm.ui import dataset

    link_loop(project / "dataset")
    with pytest.warns(UserWarning):
        _rows, message = dataset._scan("dataset/loop-a", "cpt")
    assert "loop-a" in message and "Traceback" not in message

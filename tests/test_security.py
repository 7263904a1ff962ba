"""What the app lets a browser reach: a login beyond this machine, nothing outside the project's folders, Hub
downloads only when allowed, no shell anywhere, and a model's own code run only when the user allows it.

The launched-app test runs `python app.py` for real (from another working directory, with a login) and
talks to it over HTTP as a browser would; the rest call the tab handlers and library functions directly.
"""

from __future__ import annotations

import ast
import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT, run_cli

from forgellm import choices, config, forms, paths
from forgellm.errors import ForgeError
from forgellm.models import registry

SECRET = "root:x:0:0:the-secret-line:/root:/bin/bash"
PASSWORD = "s3cret-Pa55"


def _import_app():
    import importlib.util

    spec = importlib.util.spec_from_file_location("forgellm_app_security", PROJECT_ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _app_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost", **extra}
    env.pop("GRADIO_SERVER_NAME", None)
    env.pop("FORGELLM_AUTH", None)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- 1. serving beyond this machine needs a login ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (["--host", "0.0.0.0"], {}, "--host 0.0.0.0"),
        (["--share"], {}, "--share"),
        ([], {"GRADIO_SERVER_NAME": "0.0.0.0"}, "GRADIO_SERVER_NAME=0.0.0.0"),
    ],
)
def test_serving_beyond_this_machine_without_a_login_refuses_to_start(tmp_path, flags, env, named):
    """`python app.py` exits non-zero before serving anything, says why and how to fix it."""
    port = _free_port()
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "app.py"), "--port", str(port), *flags],
        cwd=tmp_path,
        env={**_app_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"serving beyond this machine ({named}) needs a login" in done.stderr
    assert "--auth USER:PASSWORD" in done.stderr and "--auth-file FILE" in done.stderr
    with socket.socket() as s:  # nothing was left listening
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("my-server.lan", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_this_machine(host, loopback):
    app = _import_app()
    args = app.parse_args(["--host", host], env={})
    assert app.is_loopback(host) is loopback
    assert (app.exposure(args) is None) is loopback


def test_logins_come_from_flags_file_and_environment_and_are_never_echoed(tmp_path):
    app = _import_app()
    login_file = tmp_path / "logins"
    login_file.write_text(f"# who may log in\n\nbob:{PASSWORD}:with-colon\n", encoding="utf-8")
    args = app.parse_args(["--auth", f"alice:{PASSWORD}", "--auth-file", str(login_file)], env={})
    logins = app.read_logins(args, {"FORGELLM_AUTH": "carol:pw"})
    assert logins == [("alice", PASSWORD), ("bob", f"{PASSWORD}:with-colon"), ("carol", "pw")]
    assert app.launch_logins(app.parse_args(["--host", "0.0.0.0", "--auth", "a:b"], env={}), {}) == [("a", "b")]

    login_file.write_text(f"alice:{PASSWORD}\nbob{PASSWORD}\n", encoding="utf-8")  # line 2 has no colon
    with pytest.raises(ForgeError) as e:
        app.read_logins(args, {})
    assert "entry 2 is not user:password" in e.value.message and str(login_file) in e.value.message
    assert PASSWORD not in e.value.message
    with pytest.raises(ForgeError, match="cannot read the login file"):
        app.read_logins(app.parse_args(["--auth-file", str(tmp_path / "missing")], env={}), {})


def _opener() -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar))


def _status(opener: urllib.request.OpenerDirector, url: str, data: bytes | None = None, headers=None) -> int:
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code


def _call(opener: urllib.request.OpenerDirector, base: str, api: str, data: list) -> str:
    """One Gradio API call (POST, then the SSE result stream); the completed event's first output."""
    body = json.dumps({"data": data}).encode()
    request = urllib.request.Request(
        f"{base}gradio_api/call/{api}", data=body, headers={"Content-Type": "application/json"}
    )
    with opener.open(request, timeout=30) as answer:
        event_id = json.load(answer)["event_id"]
    with opener.open(f"{base}gradio_api/call/{api}/{event_id}", timeout=300) as answer:
        stream = answer.read().decode()
    assert "event: complete" in stream, stream
    last = [line for line in stream.splitlines() if line.startswith("data:")][-1]
    return json.loads(last[len("data:") :])[0]


def _wait_until_serving(proc: subprocess.Popen, url: str, log: Path) -> None:
    opener = _opener()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            opener.open(url, timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it answers (a login may be needed)
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not serve: {log.read_text()[-3000:]}")


def test_a_launched_app_with_a_login_guards_every_page_and_api_call_and_loads_nothing_from_its_start_folder(
    tmp_path, tiny_model
):
    """`python app.py --auth-file F`, started from another folder, with Hub downloads off and a Hub server:

    without a login the config, the API description and every call answer 401 (the page itself shows only
    the login form); a wrong password is refused; after `/login` everything works. Then, logged in: a model
    folder that sits in the folder the app was started from is not loaded (before the fix it was), and a Hub
    id outside the cache is refused with the way to allow downloads, without one request to the Hub.
    """
    from hub_server import HubServer, Repo, User

    workdir = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, workdir / "my-model")  # a loadable model, named like one a user might type
    shutil.copytree(tiny_model, workdir / "alice" / "tiny-chat")  # shaped like a Hub id
    logins = tmp_path / "logins"
    logins.write_text(f"alice:{PASSWORD}\n", encoding="utf-8")
    port, log = _free_port(), tmp_path / "app.log"
    base = f"http://127.0.0.1:{port}/"
    with HubServer({"hf_reader": User("reader")}) as hub:
        hub.repos["alice/tiny-chat"] = Repo(
            "alice/tiny-chat", private=False, creator="alice", files={"config.json": b"{}"}
        )
        env = _app_env(
            HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0", FORGELLM_HUB_DOWNLOADS="off"
        )
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(PROJECT_ROOT / "app.py"), "--port", str(port), "--auth-file", str(logins)],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_until_serving(proc, base, log)
            anonymous = _opener()
            assert _status(anonymous, f"{base}config") == 401
            assert _status(anonymous, f"{base}gradio_api/info") == 401
            call = json.dumps({"data": ["tiny", "none", None, False]}).encode()
            json_header = {"Content-Type": "application/json"}
            assert _status(anonymous, f"{base}gradio_api/call/_load", call, json_header) == 401
            with anonymous.open(base, timeout=30) as page:
                html = page.read().decode()
            assert '"auth_required":true' in html.replace(" ", "") and "Publishing" not in html  # no tab shown

            form = {"Content-Type": "application/x-www-form-urlencoded"}
            wrong = urllib.parse.urlencode({"username": "alice", "password": "guess"}).encode()
            assert _status(anonymous, f"{base}login", wrong, form) == 400
            assert _status(anonymous, f"{base}config") == 401

            user = _opener()
            right = urllib.parse.urlencode({"username": "alice", "password": PASSWORD}).encode()
            assert _status(user, f"{base}login", right, form) == 200
            with user.open(f"{base}config", timeout=30) as answer:
                assert json.load(answer)["title"] == "ForgeLLM"
            assert _status(user, f"{base}gradio_api/info") == 200
            with user.open(base, timeout=30) as page:
                assert "Publishing" in page.read().decode()  # the whole app, once logged in

            reply = _call(user, base, "_load", ["my-model", "none", None, False])
            assert "not found" in reply and "Ready" not in reply, reply
            reply = _call(user, base, "_load", ["alice/tiny-chat", "none", None, False])
            assert "Hub downloads are switched off" in reply and "--allow-downloads" in reply, reply
            assert "Ready" not in reply and hub.requests == []  # not even asked
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    output = log.read_text()
    assert "Login required (1 user(s))." in output and PASSWORD not in output


# ---- 2. nothing outside the project's folders -------------------------------------------------------------


@pytest.fixture
def linked_project(tmp_path, monkeypatch) -> Path:
    """A project whose dataset/notes holds real documents and a link to a secret file outside the project."""
    from forgellm.data import ingest

    project = tmp_path / "project"
    notes = project / "dataset" / "notes"
    notes.mkdir(parents=True)
    for i in range(8):
        (notes / f"bees-{i}.txt").write_text(f"Note {i}. The queen lays eggs and the workers feed the brood. " * 40)
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text(SECRET + "\n")
    (notes / "passwd.txt").symlink_to(secret)
    (project / "configs").mkdir()
    monkeypatch.setattr(paths, "PROJECT_ROOT", project)
    monkeypatch.setattr(ingest, "PROJECT_ROOT", project)  # where ingestion resolves relative data paths
    monkeypatch.setattr(choices, "CONFIGS_DIR", project / "configs")
    return project


def _form(cfg: config.TrainConfig, **changes) -> list:
    values = dict(zip(forms.FORM_KEYS, forms.form_values(cfg), strict=True))
    values.update(changes)
    return [values[key] for key in forms.FORM_KEYS]


def test_the_dataset_tab_refuses_a_symlink_to_a_file_outside(linked_project):
    """The bug: a file link in dataset/ to /etc/passwd was read and shown. Scan, Use, the report and the row
    viewer now refuse the folder holding it (and the link itself), naming the link; nothing of it is shown."""
    from forgellm.ui import dataset

    with pytest.warns(UserWarning):
        rows, message = dataset._scan("dataset/notes", "cpt")
    assert "dataset/notes/passwd.txt is a symbolic link" in message and SECRET not in str(rows)
    with pytest.warns(UserWarning):
        _rows, message = dataset._scan("dataset/notes/passwd.txt", "cpt")
    assert "is a symbolic link" in message
    assert "symbolic link" in dataset._use("dataset/notes")[1]
    assert "dataset/notes/passwd.txt" not in choices.dataset_choices()

    base = config.TrainConfig(data="dataset/notes", val_fraction=0.25, max_seq_length=64)
    (linked_project / "configs" / "notes.yaml").write_text(config.dump_yaml(base))
    for choice, values in [
        (choices.DEFAULTS_CHOICE, _form(config.TrainConfig(), data=["dataset/notes"])),  # changed in the form
        ("configs/notes.yaml", _form(base)),  # as the config file says
    ]:
        with pytest.warns(UserWarning):
            pieces, info = dataset._sample("train", 0, choice, *values)
        assert "passwd.txt is a symbolic link" in info and SECRET not in str(pieces), choice
        with pytest.warns(UserWarning):
            report, _plot = dataset._report(choice, *values)
        assert "passwd.txt is a symbolic link" in report and SECRET not in report, choice

    # The same folder without the link is read and shown: the refusal came from the link.
    (linked_project / "dataset" / "notes" / "passwd.txt").unlink()
    rows, message = dataset._scan("dataset/notes", "cpt")
    assert message.startswith("8 file(s) as cpt: 8 read") and len(rows) == 8
    pieces, info = dataset._sample("train", 0, "configs/notes.yaml", *_form(base))
    assert info.startswith("Row 0 of") and "The queen lays eggs" in "".join(text for text, _kind in pieces)


@pytest.mark.parametrize(
    "value", ["/etc", "dataset/../outside", "~/dataset", "dataset/notes/link-dir/x.txt", "dataset/missing", ""]
)
def test_data_paths_must_be_real_relative_paths_under_dataset(linked_project, value):
    (linked_project / "dataset" / "notes" / "link-dir").symlink_to(linked_project / "dataset", target_is_directory=True)
    assert choices.dataset_path_problem(value) is not None
    with pytest.raises(ForgeError, match="not a folder or file under dataset/"):
        choices.require_dataset_paths(["dataset/notes/bees-0.txt", value])
    choices.require_dataset_paths("dataset/notes/bees-0.txt")  # a real file beside them is fine


def test_a_model_name_is_never_looked_up_in_the_folder_the_app_runs_in(tmp_path, monkeypatch, tiny_model):
    """The bug: a model name typed in the app was resolved relative to the current directory, outside the
    project. Chat's Load and the Training form refuse such a name, even one that also names a real folder
    under models/, while the same name works from the project folder."""
    from forgellm.ui import chat

    workdir = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, workdir / "my-model")
    shutil.copytree(tiny_model, workdir / "org" / "name")
    monkeypatch.chdir(workdir)
    for name in ("my-model", "org/name"):
        with pytest.warns(UserWarning):
            reply = chat._load(name, "none", None, False)
        assert "also names a folder in the app's working directory" in reply and "Ready" not in reply
        with pytest.raises(ForgeError, match="working directory"):
            forms.build_overrides(config.TrainConfig(), forms_values(model=name))

    fused = paths.models_dir() / "my-model"
    shutil.copytree(tiny_model, fused)
    try:
        with pytest.raises(ForgeError, match="working directory"):
            choices.check_model_choice("my-model")  # models/ has it too, but lookup would take the cwd's
        monkeypatch.chdir(PROJECT_ROOT)
        assert choices.check_model_choice("my-model") == "my-model"
        assert registry.resolve_model("my-model") == fused.resolve()
    finally:
        shutil.rmtree(fused)


def forms_values(**changes) -> dict:
    cfg = config.TrainConfig()
    values = dict(zip(forms.FORM_KEYS, forms.form_values(cfg), strict=True))
    values.update(changes)
    return values


# ---- 3. Hub downloads can be switched off -------------------------------------------------------------------


def test_hub_downloads_follow_the_switch_and_never_fetch_code(tmp_path, monkeypatch, tiny_model):
    """Against a Hub-protocol server on 127.0.0.1: with downloads on (a real subprocess, as the trainer or the
    CLI would), a Hub id downloads its weights, config and tokenizer, never the repo's .py code; with
    FORGELLM_HUB_DOWNLOADS=off the cached repo still loads with no request, and an uncached one is refused,
    in the Chat tab and the Training form alike, with the way to allow it."""
    from hub_server import HubServer, Repo, User
    from huggingface_hub import constants

    from forgellm import model_sources
    from forgellm.ui import chat

    cache = tmp_path / "hf" / "hub"
    files = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file()}
    files["modeling_evil.py"] = b"raise SystemExit('remote code ran')\n"
    with HubServer({"hf_reader": User("reader")}) as hub:
        for repo in ("alice/tiny-chat", "alice/tiny-other"):
            hub.repos[repo] = Repo(repo, private=False, creator="alice", files=dict(files))
            hub.repos[repo].commits.append({"oid": "c0ffee" * 6 + "c0fe"})
        env = _app_env(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1")
        env.pop(registry.DOWNLOADS_ENV, None)  # unset: on
        code = "from forgellm.models.registry import resolve_model; print(resolve_model('alice/tiny-chat'))"
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        folder = Path(done.stdout.strip().splitlines()[-1])
        assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
        assert "download" in hub.routes() and not list(folder.glob("*.py"))
        assert not any("modeling_evil" in r.path for r in hub.requests)  # the code was never even asked for

        hub.requests.clear()
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import
        monkeypatch.setenv(registry.DOWNLOADS_ENV, "off")
        assert model_sources.resolve_chat_model("alice/tiny-chat") == folder  # cached: no Hub needed
        assert registry.resolve_model("alice/tiny-chat") == folder
        assert choices.check_model_choice("alice/tiny-chat") == "alice/tiny-chat"
        with pytest.raises(ForgeError) as e:
            registry.resolve_model("alice/tiny-other")
        assert "Hub downloads are switched off" in e.value.message and "--allow-downloads" in e.value.message
        with pytest.warns(UserWarning):
            reply = chat._load("alice/tiny-other", "none", None, False)
        assert "FORGELLM_HUB_DOWNLOADS=on" in reply and "Ready" not in reply
        with pytest.raises(ForgeError, match="Hub downloads are switched off"):
            forms.build_overrides(config.TrainConfig(), forms_values(model="alice/tiny-other"))
        assert hub.requests == []
    assert not (cache / "models--alice--tiny-other").exists()
    assert "Hub downloads are off" in chat._model_info()
    monkeypatch.setenv(registry.DOWNLOADS_ENV, "perhaps")
    with pytest.raises(ForgeError, match="neither on nor off"):
        registry.hub_downloads_allowed()


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ([], {}, None),  # this machine only: downloads stay as the environment says (unset: on)
        (["--host", "0.0.0.0", "--auth", "a:b"], {}, "off"),
        (["--share", "--auth", "a:b"], {}, "off"),
        ([], {"GRADIO_SERVER_NAME": "0.0.0.0"}, "off"),
        (["--host", "0.0.0.0", "--auth", "a:b", "--allow-downloads"], {}, "on"),
        (["--host", "0.0.0.0", "--auth", "a:b"], {"FORGELLM_HUB_DOWNLOADS": "on"}, None),  # the operator chose
    ],
)
def test_downloads_are_off_by_default_when_serving_beyond_this_machine(flags, env, expected):
    app = _import_app()
    assert app.downloads_setting(app.parse_args(flags, env=env), env) == expected


# ---- 4. subprocesses only with argument lists -----------------------------------------------------------------


SHELL_CALLS = {"os.system", "system", "popen", "getoutput", "getstatusoutput", "create_subprocess_shell"}


def _shell_uses(path: Path) -> list[str]:
    """Calls that hand a command line to a shell: shell=True, os.system, os.popen, subprocess.getoutput,
    asyncio.create_subprocess_shell, or a subprocess call whose command is one string."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
        shell = [k.value for k in node.keywords if k.arg == "shell"]
        if shell and not (isinstance(shell[0], ast.Constant) and shell[0].value is False):
            found.append(f"{where} shell=")
        if name in SHELL_CALLS or name.split(".")[-1] in SHELL_CALLS - {"system"}:  # platform.system() is fine
            found.append(f"{where} {name}")
        command_is_text = node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
        if command_is_text and (name.startswith("subprocess.") or name in ("Popen", "check_output", "check_call")):
            found.append(f"{where} {name}(<one string>)")
    return found


def test_no_subprocess_goes_through_a_shell():
    files = [PROJECT_ROOT / "app.py", *sorted((PROJECT_ROOT / "forgellm").rglob("*.py"))]
    assert len(files) > 50  # the package was really walked
    assert [use for path in files for use in _shell_uses(path)] == []


def test_the_shell_finder_finds_each_form(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PROJECT_ROOT", tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, subprocess\n"
        "subprocess.run('ls -l', shell=True)\n"
        "os.system('ls')\n"
        "os.popen('ls')\n"
        "subprocess.check_output(f'ls {x}')\n"
        "subprocess.run(['ls'], shell=False)\n"
    )
    assert [use.split(" ", 1)[0] for use in _shell_uses(bad)] == ["bad.py:2", "bad.py:2", "bad.py:3", "bad.py:4",
                                                                  "bad.py:5"]  # fmt: skip


# ---- 5. a model's own code runs only when the user sets trust_remote_code -------------------------------------


@pytest.fixture
def custom_code_model(tmp_path, tiny_model, monkeypatch) -> tuple[Path, Path]:
    """The tiny model with a tokenizer class of its own (transformers' `auto_map`), whose module writes a
    marker file when it is imported: the marker shows whether the model's code ever ran."""
    folder, marker = tmp_path / "custom-code-model", tmp_path / "the-code-ran"
    shutil.copytree(tiny_model, folder)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config.update(
        tokenizer_class="MarkerTokenizer", auto_map={"AutoTokenizer": [None, "marker_tokenizer.MarkerTokenizer"]}
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "marker_tokenizer.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['FORGELLM_TEST_MARKER']).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class MarkerTokenizer(PreTrainedTokenizerFast):\n"
        "    pass\n"
    )
    monkeypatch.setenv("FORGELLM_TEST_MARKER", str(marker))
    return folder, marker


def test_a_models_own_code_never_runs_unless_the_config_allows_it(custom_code_model):
    from forgellm import evaluation, inference
    from forgellm.data import pipeline
    from forgellm.publish import fuse
    from forgellm.training.model_setup import load_base

    folder, marker = custom_code_model
    loaders = {
        "training": (lambda: load_base(folder), "trust_remote_code: true"),
        "data preparation": (lambda: pipeline.load_tokenizer(config.TrainConfig(model=str(folder))), "trust_remote"),
        "chat": (lambda: inference._load(folder, None), "never run a model's own code"),
        "evaluation": (lambda: evaluation.load_model(str(folder)), "never run a model's own code"),
        "publishing": (lambda: fuse._tokenizer_for(folder, {}, folder), "never run a model's own code"),
    }
    for name, (load, fix) in loaders.items():
        with pytest.raises(ForgeError, match="ships its own") as refused:
            load()
        assert fix in refused.value.message, name
        assert not marker.exists(), f"{name} ran the model's code"
    result = run_cli("generate", "--model", str(folder), "--prompt", "Bees", "--max-tokens", "2", check=False)
    assert result.returncode != 0 and "ships its own" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    load_base(folder, trust_remote_code=True)  # what the user allows runs (and the marker can tell)
    assert marker.read_text() == "ran"

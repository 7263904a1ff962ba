"""Pushing to the Hub, for real and offline: the real huggingface_hub client against tests/hub_server.py.

The server speaks the Hub's upload API (whoami, create, validate-yaml, preupload, LFS single and multipart,
NDJSON commit) and keeps what it receives, so each test checks the bytes that arrived, what was never
sent, and the local folder before and after. Xet is disabled (the plain LFS path; the real Hub negotiates
Xet, which is not tested offline). No MLX: the model folders are synthetic.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import types
from pathlib import Path

import pytest
from helpers import run_cli
from hub_server import HubServer, User

from forgellm import runs
from forgellm.errors import ForgeError
from forgellm.publish import hub

TOKEN = "hf_test" + secrets.token_hex(16)  # alice: her own namespace, writes to acme, reads readers
READ_ONLY_TOKEN = "hf_test_ro" + secrets.token_hex(16)
BIG = 12 * 1024 * 1024  # over 10 MB and over the server's 5 MiB multipart chunk: LFS multipart
CARD = "---\nlicense: apache-2.0\nlibrary_name: mlx\ntags: [mlx]\npipeline_tag: text-generation\n---\n# tiny\n"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub online, plain LFS (no Xet), no backoff sleeps, no token from the environment."""
    from huggingface_hub import close_session, constants
    from huggingface_hub.utils import _http

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets HF_HUB_OFFLINE=1, read at import
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda _s: None))  # its retries wait 1-8 s
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    yield
    close_session()


@pytest.fixture
def server(client) -> HubServer:
    users = {
        TOKEN: User("alice", orgs={"acme": "write", "readers": "read"}),
        READ_ONLY_TOKEN: User("bob", token_role="read"),
    }
    with HubServer(users) as running:
        yield running


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A synthetic model folder: two weight shards (one multipart LFS, one single PUT), config, tokenizer,
    card; plus files that must never be sent (a cache folder, hidden files, a log, notes)."""
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "model-00001-of-00002.safetensors").write_bytes(os.urandom(BIG))
    (folder / "model-00002-of-00002.safetensors").write_bytes(os.urandom(4096))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    (folder / "README.md").write_text(CARD)
    (folder / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (folder / ".cache").mkdir()
    (folder / ".cache" / "blob").write_bytes(b"cache")
    (folder / ".DS_Store").write_bytes(b"hidden")
    (folder / "train.log").write_text("a log\n")
    (folder / "notes.txt").write_text("private notes\n")
    return folder


SENT = {
    "README.md",
    "config.json",
    "loss.png",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, hidden ones included."""
    return {str(p.relative_to(folder)): sha(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_arrived(server: HubServer, repo_id: str, folder: Path, names: set[str] = SENT) -> None:
    files = server.repos[repo_id].files
    assert set(files) == names
    for name in names:
        assert sha(files[name]) == sha((folder / name).read_bytes()), name


@pytest.fixture
def written_since() -> float:
    """When the test started: files modified after it are the ones this test's code wrote."""
    return time.time() - 1


def assert_no_token(*texts: str, folders: tuple[Path, ...] = (), since: float = 0.0) -> None:
    """The token is in none of `texts` and in no file under `folders` written after `since`."""
    for text in texts:
        assert TOKEN not in text and READ_ONLY_TOKEN not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_mtime >= since:
                assert TOKEN.encode() not in path.read_bytes(), path


def test_push_sends_exactly_the_model_files_in_one_private_commit(
    server, model, capfd, forgellm_home, written_since
) -> None:
    before = hashes(model)
    events: list[hub.PushProgress] = []
    result = hub.push(model, "alice/tiny", token=TOKEN, endpoint=server.url, progress=events.append)

    assert result.url == f"{server.url}/alice/tiny" and result.private
    assert_arrived(server, "alice/tiny", model)  # bytes equal, the card included, no stray file
    repo = server.repos["alice/tiny"]
    assert repo.private is True  # private by default
    assert len(repo.commits) == 1 and set(repo.commits[0]["files"]) == SENT  # ONE commit with everything
    routes = server.routes()
    assert {"part", "complete", "put"} <= set(routes)  # multipart LFS (12 MB) and single PUT (4 KB) both ran
    assert routes.count("commit") == 1
    assert [e.phase for e in events][0] == "create" and events[-1].phase == "done"
    assert events[-1].done_bytes == events[-1].total_bytes == sum(f.size for f in result.files)
    assert hashes(model) == before
    out = capfd.readouterr()
    assert_no_token(out.out, out.err, folders=(model, forgellm_home), since=written_since)


def test_public_is_a_deliberate_choice(server, model) -> None:
    hub.push(model, "alice/open", token=TOKEN, endpoint=server.url, private=False)
    assert server.repos["alice/open"].private is False


def test_preflight_lists_the_files_and_sends_nothing(server, model) -> None:
    plan = hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert plan.ok, plan.summary()
    assert {f.path for f in plan.files} == SENT and plan.private and plan.user == "alice"
    assert plan.repo_exists is False
    text = plan.summary()
    assert "private" in text and "model-00001-of-00002.safetensors" in text and "12.6 MB" in text
    assert server.uploads_seen() == []  # whoami, model info and validate-yaml only


def test_preflight_reports_bad_repo_ids_and_namespaces_without_rights_before_any_upload(server, model) -> None:
    cases = {
        "alice/bad..name": "is not valid",
        "a/b/c": "is not valid",
        "readers/model": "role in 'readers' is 'read'",
        "stranger/model": "not a member of 'stranger'",
    }
    for repo_id, expected in cases.items():
        plan = hub.preflight(model, repo_id, token=TOKEN, endpoint=server.url)
        assert not plan.ok and expected in plan.summary(), plan.summary()
        with pytest.raises(hub.PreflightError, match="nothing was sent"):
            hub.push(model, repo_id, token=TOKEN, endpoint=server.url)
    plan = hub.preflight(model, "bob/model", token=READ_ONLY_TOKEN, endpoint=server.url)
    assert "read-only" in plan.summary()
    assert hub.preflight(model, "acme/model", token=TOKEN, endpoint=server.url).ok  # an org where alice writes
    for repo_id in ("Alice/model", "ACME/model"):  # Hub names ignore case: never refused for it
        assert hub.preflight(model, repo_id, token=TOKEN, endpoint=server.url).ok, repo_id
    assert server.uploads_seen() == []  # the server's log: not one create, preupload, LFS or commit request
    assert server.repos == {}


def test_preflight_refuses_a_public_repo_when_private_was_asked(server, model) -> None:
    hub.push(model, "alice/open", token=TOKEN, endpoint=server.url, private=False)
    plan = hub.preflight(model, "alice/open", token=TOKEN, endpoint=server.url)
    assert plan.repo_exists and "already exists and is PUBLIC" in plan.summary()
    assert hub.preflight(model, "alice/open", token=TOKEN, endpoint=server.url, private=False).ok


def test_an_unclosed_front_matter_is_a_problem(server, model) -> None:
    """Regression: the preflight read everything after an opening --- as YAML, so a card whose closing ---
    was lost passed, and the Hub showed it without licence or tags."""
    (model / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: mlx\n# tiny\n")
    plan = hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert "README.md: the front matter has no closing --- line" in plan.summary() and not plan.ok
    (model / "README.md").write_text(CARD.replace("\n", "\r\n").replace("# tiny", "# Bienen 🐝 café"))
    assert hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url).ok  # Windows line endings, UTF-8
    hub.push(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert_arrived(server, "alice/tiny", model)


def test_card_yaml_is_validated_locally_and_by_the_server(server, model) -> None:
    (model / "README.md").write_text("---\nbase_model: /Users/me/models/tiny\n---\n# x\n")
    plan = hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert "base_model" in plan.summary() and "not a valid model id" in plan.summary()  # the server's verdict
    (model / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    assert "not valid YAML" in hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url).summary()
    assert server.uploads_seen() == []


def test_a_fuse_without_a_card_gets_one_written_and_any_other_folder_is_refused(server, model, monkeypatch) -> None:
    (model / "README.md").unlink()
    plan = hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert "no model card (README.md)" in plan.summary()  # not a ForgeLLM fuse: a card is required
    (model / "forgellm_fuse.json").write_text(json.dumps({"checkpoint": str(model / "gone")}))
    (model / "forgellm_roundtrip.json").write_text(json.dumps(roundtrip(True)))
    plan = hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert "could not write the model card" in plan.summary()  # the real write_card: its checkpoint is gone
    written = []

    def write_card(model_dir: Path, license: str | None = None, repo_id: str | None = None) -> Path:
        written.append(repo_id)
        (model_dir / "README.md").write_text(CARD)
        return model_dir / "README.md"

    monkeypatch.setattr("forgellm.publish.card.write_card", write_card)
    plan = hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert plan.ok and written == ["alice/tiny"] and "README.md" in {f.path for f in plan.files}, plan.summary()
    hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert written == ["alice/tiny"]  # a card is there now: kept
    (model / "README.md").write_text("---\nlibrary_name: mlx\ntags: [mlx]\n---\n")  # mlx-lm's placeholder
    hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert written == ["alice/tiny", "alice/tiny"]  # replaced by ForgeLLM's card


def test_a_fuse_is_pushed_only_after_its_roundtrip_check_passed_or_with_the_override(server, model) -> None:
    (model / "forgellm_fuse.json").write_text(json.dumps({"checkpoint": "runs/x/checkpoints/best"}))
    plan = hub.preflight(model, "alice/fused", token=TOKEN, endpoint=server.url)
    assert "has no round-trip check" in plan.summary() and "--allow-failed-roundtrip" in plan.summary()
    (model / "forgellm_roundtrip.json").write_text(json.dumps(roundtrip(False)))
    with pytest.raises(hub.PreflightError, match="failed its round-trip check"):
        hub.push(model, "alice/fused", token=TOKEN, endpoint=server.url)
    assert server.uploads_seen() == []
    hub.push(model, "alice/fused", token=TOKEN, endpoint=server.url, allow_failed_roundtrip=True)
    # The fuse record (local checkpoint path) stays home; the round-trip result travels with the model.
    assert_arrived(server, "alice/fused", model, SENT | {"forgellm_roundtrip.json"})
    (model / "forgellm_roundtrip.json").write_text(json.dumps(roundtrip(True)))
    assert hub.preflight(model, "alice/fused", token=TOKEN, endpoint=server.url).ok


def test_a_file_naming_a_local_folder_is_not_published(server, model) -> None:
    from forgellm.paths import PROJECT_ROOT

    (model / "config.json").write_text(json.dumps({"model_type": "llama", "_name_or_path": str(PROJECT_ROOT)}))
    plan = hub.preflight(model, "alice/leaky", token=TOKEN, endpoint=server.url)
    assert not plan.ok and f"config.json contains the local path {PROJECT_ROOT}" in plan.summary()
    with pytest.raises(hub.PreflightError):
        hub.push(model, "alice/leaky", token=TOKEN, endpoint=server.url)
    assert server.uploads_seen() == []


def test_the_run_folder_of_a_fuse_is_a_local_path_wherever_it_is(server, model, tmp_path) -> None:
    """Regression: only home, the project and ForgeLLM's home were looked for, so a run trained under
    /tmp (or on another disk) could be named in a pushed file."""
    run_dir = tmp_path / "scratch" / "runs" / "20260101-cpt-tiny"
    (model / "forgellm_fuse.json").write_text(json.dumps({"checkpoint": str(run_dir / "checkpoints" / "6")}))
    (model / "forgellm_roundtrip.json").write_text(json.dumps(roundtrip(True)))
    assert hub.preflight(model, "alice/tmp-run", token=TOKEN, endpoint=server.url).ok
    (model / "tokenizer_config.json").write_text(json.dumps({"name_or_path": str(run_dir / "tokenizer")}))
    plan = hub.preflight(model, "alice/tmp-run", token=TOKEN, endpoint=server.url)
    assert f"tokenizer_config.json contains the local path {run_dir}" in plan.summary()
    (model / "tokenizer_config.json").write_text(json.dumps({"name_or_path": str(model)}))  # the folder itself
    plan = hub.preflight(model, "alice/tmp-run", token=TOKEN, endpoint=server.url)
    assert f"tokenizer_config.json contains the local path {model}" in plan.summary()


def test_a_pasted_token_with_extra_characters_is_refused_before_any_request(server, model) -> None:
    """Regression: a token pasted with a line break or a non-ASCII character failed inside the HTTP client
    (reported as 'cannot reach the server', or a bare UnicodeEncodeError) instead of naming the token."""
    for pasted in (TOKEN + "\nnext line", TOKEN + " ", "hf_" + "\u2026" + TOKEN[3:], TOKEN[:10] + " " + TOKEN[10:]):
        requests_before = len(server.requests)
        plan = hub.preflight(model, "alice/tiny", token=pasted, endpoint=server.url)
        summary = plan.summary()
        if pasted.strip() == TOKEN:  # surrounding whitespace is stripped: the token works
            assert plan.ok, summary
            continue
        assert "contains spaces, line breaks or non-ASCII characters" in summary, summary
        assert TOKEN[:10] not in summary and len(server.requests) == requests_before, summary


def roundtrip(identical: bool) -> dict:
    """A forgellm_roundtrip.json as forgellm.publish.roundtrip writes it."""
    from forgellm.publish.roundtrip import RoundTrip

    return RoundTrip(identical=identical, chat_format=False, max_tokens=16).to_dict()


FAULTS = {
    # name: (how to break the server, what the error message says)
    "bad token": (lambda s: None, "rejected the token"),
    "403 on commit": (lambda s: s.fail("commit", 403), "no write access to alice/tiny (403) while committing"),
    "500 once on create": (lambda s: s.fail("create", 500), "the server failed (500) while creating the repo"),
    "500 once on commit": (lambda s: s.fail("commit", 500), "the server failed (500) while committing"),
    "503 mid-upload": (
        lambda s: s.fail("part", 503, times=None),
        "the server failed (503) while uploading model-00001-of-00002.safetensors",
    ),
    "connection dropped mid-upload": (
        lambda s: s.drop("part", times=None),
        "cannot reach",
    ),
    "no answer to the commit": (lambda s: s.hang("commit", 10), "did not answer in time while committing"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_failure_has_its_message_leaves_the_folder_untouched_and_a_second_push_works(
    server, model, fault, monkeypatch, capfd, forgellm_home, written_since
) -> None:
    from huggingface_hub import close_session

    inject, message = FAULTS[fault]
    inject(server)
    token = "hf_wrong" + secrets.token_hex(8) if fault == "bad token" else TOKEN
    if fault == "no answer to the commit":
        monkeypatch.setattr(hub, "READ_TIMEOUT_S", 0.5)
        close_session()  # the next client is made with the short timeout
    before = hashes(model)
    with pytest.raises(ForgeError) as failed:
        hub.push(model, "alice/tiny", token=token, endpoint=server.url)
    assert message in failed.value.message, failed.value.message
    assert "fix:" in failed.value.message.lower() and token not in failed.value.message
    assert hashes(model) == before
    assert "alice/tiny" not in server.repos or server.repos["alice/tiny"].files == {}

    server.clear_faults()
    monkeypatch.setattr(hub, "READ_TIMEOUT_S", 30.0)
    close_session()
    parts_before = server.routes().count("part")
    hub.push(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert_arrived(server, "alice/tiny", model)
    assert hashes(model) == before
    if fault == "500 once on commit":  # the big file arrived the first time: it is not sent again
        assert server.routes().count("part") == parts_before
    out = capfd.readouterr()
    assert_no_token(out.out, out.err, folders=(model, forgellm_home), since=written_since)


def test_the_client_retries_a_one_shot_5xx_mid_upload_by_itself(server, model) -> None:
    server.fail("part", 503, times=1)
    hub.push(model, "alice/tiny", token=TOKEN, endpoint=server.url)
    assert_arrived(server, "alice/tiny", model)
    assert [r.status for r in server.requests if r.route == "part"].count(503) == 1


def test_a_server_that_cannot_be_reached_is_named(client, model) -> None:
    with HubServer({}) as gone:
        url = gone.url  # a port that was just free: nothing listens there now
    before = hashes(model)
    with pytest.raises(ForgeError, match="cannot reach http://127.0.0.1"):
        hub.preflight(model, "alice/tiny", token=TOKEN, endpoint=url)
    assert hashes(model) == before


def test_no_token_and_offline_mode_are_reported(client, model, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert "no Hugging Face token" in hub.preflight(model, "alice/tiny", endpoint="http://127.0.0.1:9").summary()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "HF_HUB_OFFLINE" in hub.preflight(model, "alice/tiny", token=TOKEN, endpoint="http://127.0.0.1:9").summary()


def test_only_model_files_are_listed(model) -> None:
    from forgellm.publish.card import CHART_FILE

    names = {f.path for f in hub.model_files(model)}
    assert names == SENT and CHART_FILE in names  # the card's chart goes, train.log, notes, .cache/ do not
    (model / "screenshot.png").write_bytes(b"\x89PNG")
    assert "screenshot.png" not in {f.path for f in hub.model_files(model)}
    (model / "link.safetensors").symlink_to(model / "model-00002-of-00002.safetensors")
    assert "link.safetensors" in {f.path for f in hub.model_files(model)}  # HF cache folders are symlinks


def test_cli_publish_end_to_end(server, model, forgellm_home, written_since) -> None:
    env = {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    before = hashes(model)
    done = run_cli("publish", str(model), "--repo-id", "alice/cli", env=env, timeout=60)
    assert "private" in done.stdout and "model-00001-of-00002.safetensors" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == f"{server.url}/alice/cli"
    assert_arrived(server, "alice/cli", model)
    assert server.repos["alice/cli"].private is True
    public = run_cli("publish", str(model), "--repo-id", "alice/cli-public", "--public", env=env, timeout=60)
    assert server.repos["alice/cli-public"].private is False and "PUBLIC" in public.stdout
    refused = run_cli(
        "publish", str(model), "--repo-id", "alice/x", env={**env, "HF_TOKEN": "hf_bad"}, check=False, timeout=60
    )
    assert refused.returncode == 2 and "rejected the token" in refused.stderr
    assert hashes(model) == before
    texts = (done.stdout, done.stderr, public.stdout, public.stderr, refused.stdout, refused.stderr)
    assert_no_token(*texts, folders=(model, forgellm_home), since=written_since)


@pytest.fixture(scope="module")
def trained_run(tiny_model: Path, forgellm_home: Path) -> Path:
    """A real tiny LoRA run under the app's runs/ (the one MLX part of this module)."""
    out = forgellm_home / "runs"
    args = ["train", "configs/cpt-tiny.yaml", "--set", f"output_dir={out}", "--set", "run_name=beekeeper-publish"]
    for item in ["max_seq_length=64", "batch_size=4", "iters=6", "steps_per_eval=3", "fine_tune_type=lora"]:
        args += ["--set", item]
    return Path(run_cli(*args).stdout.splitlines()[0])


def test_a_trained_run_is_fused_and_published_with_its_card(server, trained_run, forgellm_home, written_since) -> None:
    """The whole promise: train → fuse (round-trip checked) → publish, and what arrived is a usable repo."""
    from forgellm.publish.fuse import fuse_run

    fused = fuse_run(trained_run, forgellm_home / "models" / "beekeeper-fused")
    env = {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    done = run_cli("publish", str(fused), "--repo-id", "alice/beekeeper", env=env, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == f"{server.url}/alice/beekeeper"
    files = server.repos["alice/beekeeper"].files
    assert {"README.md", "loss.png", "config.json", "forgellm_roundtrip.json"} <= set(files)
    assert "model.safetensors" in files and "forgellm_fuse.json" not in files  # the local record stays home
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "library_name: mlx" in card and "alice/beekeeper" in card
    assert "identical" in card  # the round-trip result is on the card
    assert server.repos["alice/beekeeper"].private is True
    for name, data in files.items():  # nothing pushed names this machine's folders
        if name.endswith((".json", ".md")):
            assert str(forgellm_home) not in data.decode() and str(Path.home()) not in data.decode(), name
    assert_no_token(done.stdout, done.stderr, folders=(fused, forgellm_home), since=written_since)


def test_adapter_only_exports_then_pushes(server, trained_run, forgellm_home, capsys, monkeypatch) -> None:
    from forgellm import cli

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    argv = ["publish", str(trained_run), "--repo-id", "alice/ad", "--adapter-only", "--checkpoint", "latest"]
    assert cli.main([*argv, "--endpoint", server.url]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{server.url}/alice/ad"
    files = server.repos["alice/ad"].files
    assert {"adapters.safetensors", "adapter_config.json", "README.md"} <= set(files)
    config = json.loads(files["adapter_config.json"])
    assert config["fine_tune_type"] == "lora" and str(forgellm_home) not in json.dumps(config)
    assert "adapter" in files["README.md"].decode().split("---")[2].lower()  # the card says what it is
    exported = forgellm_home / "models" / f"{trained_run.name}-adapter"
    assert sha(files["adapters.safetensors"]) == sha((exported / "adapters.safetensors").read_bytes())
    latest = runs.resolve_checkpoint(trained_run, "latest")
    assert sha(files["adapters.safetensors"]) == sha((latest / runs.ADAPTER_FILE).read_bytes())


def test_the_publishing_tab_flow_fuse_card_quantize_push(server, trained_run, forgellm_home, monkeypatch) -> None:
    """The tab's handlers in order, as a user clicks them: fuse, edit the card, quantize, preflight, push."""
    from forgellm.publish import workflow
    from forgellm.ui import publishing

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    message, _ = publishing._fuse(trained_run.name, "best", "tab-fused", False)
    assert "Round-trip check" in message and "identical" in message, message
    assert "tab-fused" in workflow.publishable_folders()

    card = publishing._show_card("tab-fused")
    assert card.startswith("---\n") and "library_name: mlx" in card
    with pytest.warns(UserWarning):
        assert "not valid YAML" in publishing._save_card("tab-fused", "---\nlicense: [unclosed\n---\n# x\n")
    edited = card.replace("# ", "# Edited: ", 1)
    assert "Saved the card" in publishing._save_card("tab-fused", edited)
    assert publishing._show_card("tab-fused") == edited  # kept as edited, not regenerated

    message, _ = publishing._quantize("tab-fused", 8, 64)
    assert "validation perplexity" in message and "tab-fused-8bit" in workflow.publishable_folders()
    assert "## Quantized" in publishing._show_card("tab-fused-8bit")

    report = publishing._preflight("tab-fused", "alice/tab", False, "", False)  # no token anywhere
    assert "nothing will be sent" in report and "HF_TOKEN" in report, report
    report = publishing._preflight("tab-fused", "alice/tab", False, TOKEN, False)
    assert "ready to push" in report and TOKEN not in report and server.uploads_seen() == []

    steps = list(publishing._push("tab-fused", "alice/tab", False, TOKEN, False))
    assert steps[-1].startswith(f"**Pushed** to [{server.url}/alice/tab]") and "(private)" in steps[-1]
    assert len(steps) > 2 and all(TOKEN not in step for step in steps)
    assert server.repos["alice/tab"].files["README.md"].decode() == edited  # the edited card was sent
    assert 'load("tab-fused")' in edited and "does not load alice/tab" in report  # said, not changed

    # Regression: an unedited card, written when the folder was picked, went out loading the local folder.
    publishing._save_card("tab-fused", card)  # ForgeLLM's card again
    list(publishing._push("tab-fused", "alice/tab-again", False, TOKEN, False))
    sent = server.repos["alice/tab-again"].files["README.md"].decode()
    assert 'load("alice/tab-again")' in sent and 'load("tab-fused")' not in sent
    list(publishing._push("tab-fused-8bit", "alice/tab-8bit", True, TOKEN, False))
    assert server.repos["alice/tab-8bit"].private is False
    assert json.loads(server.repos["alice/tab-8bit"].files["config.json"])["quantization"]["bits"] == 8


def test_the_tab_offers_and_accepts_only_folders_it_wrote(forgellm_home) -> None:
    from forgellm.publish import workflow

    mine = forgellm_home / "models" / "users-own-model"
    mine.mkdir(parents=True, exist_ok=True)
    (mine / "config.json").write_text("{}")
    assert "users-own-model" not in workflow.publishable_folders()
    elsewhere = forgellm_home / "outside-models"
    elsewhere.mkdir()
    (elsewhere / "forgellm_fuse.json").write_text("{}")
    (forgellm_home / "models" / "linked").symlink_to(elsewhere)  # a link would lead the app out of models/
    assert "linked" not in workflow.publishable_folders()
    for name in ("users-own-model", "linked", "../runs", "/etc", None, ""):
        with pytest.raises(ForgeError, match="no publishable model"):
            workflow.model_folder(name)

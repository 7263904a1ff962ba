"""Push a model folder to the Hugging Face Hub (or any Hub-compatible server): a preflight, then one commit.

`preflight()` checks everything it can before a byte is sent: the token (`whoami`), write rights on the
namespace, the repo id, the card's YAML (the server's `validate-yaml`), the round-trip check of a ForgeLLM
fuse, and lists the files that will be sent. `push()` runs it again, refuses on any problem, then creates
the repo (private unless `private=False` is passed) and sends every file in ONE commit. Every failure is a
ForgeError that says what to do; the local folder is never modified by a failed push, and pushing again
after one works (files the server already holds are not sent twice).

The token comes from the `token` argument (the app's password field), `HF_TOKEN` or the huggingface_hub
login. It is never logged, written to a file or put into a message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ..errors import ForgeError
from .card_file import CARD_FILE, card_state, parse_front_matter, read_text
from .files import FUSE_RECORD as PROVENANCE_FILE
from .files import ROUNDTRIP_FILE
from .roundtrip import read_roundtrip

DEFAULT_ENDPOINT = "https://huggingface.co"
# Only a model's own files are sent (top level of the folder, no hidden files): weights, config, tokenizer,
# chat template, the card and its chart, ForgeLLM provenance, a license.
MODEL_FILE_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "tokenizer*.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
    "loss.png",  # the card's loss chart (card.CHART_FILE)
    "forgellm_roundtrip.json",  # the round-trip result: prompts and token ids only
    "forgellm_adapter.json",  # an adapter export's provenance: run name, step, hash (no paths)
    "LICENSE",
    "LICENSE.md",
    "LICENSE.txt",
)
WRITE_ROLES = ("admin", "write", "contributor")  # whoami-v2 `orgs[].roleInOrg` values that may create repos
CONNECT_TIMEOUT_S = 30.0  # a dead network fails in this long instead of hanging
READ_TIMEOUT_S = 300.0  # a server that stops answering (mid-upload or on the commit) fails in this long

_TOKEN_FIX = (
    "create a token with write access at {endpoint}/settings/tokens, then set HF_TOKEN, run `hf auth login`, "
    "or paste it in the app's token field"
)


@dataclass(frozen=True)
class PushFile:
    """One file that will be sent: its path in the repo (= in the folder) and size in bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class Problem:
    """Something that blocks the push, and what to do about it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} (fix: {self.fix})"


@dataclass
class Preflight:
    """What a push would do, checked before anything is sent. `ok` is False while `problems` is non-empty.

    It never holds the token (so it can be shown, logged or kept in UI state).
    """

    folder: Path
    repo_id: str
    endpoint: str
    private: bool
    files: list[PushFile] = field(default_factory=list)
    user: str | None = None
    token_source: str | None = None
    repo_exists: bool | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def url(self) -> str:
        return f"{self.endpoint}/{self.repo_id}"

    def summary(self, with_problems: bool = True) -> str:
        """The preflight as text: target, visibility, files with sizes, notes, problems with their fixes."""
        who = f" as {self.user}" if self.user else ""
        state = "exists" if self.repo_exists else "will be created" if self.repo_exists is False else "not checked"
        lines = [f"push {self.folder} -> {self.url} ({'private' if self.private else 'PUBLIC'}, repo {state}){who}"]
        lines += [f"  {f.path:<48} {human_size(f.size):>10}" for f in self.files]
        lines.append(f"  {len(self.files)} file(s), {human_size(self.total_bytes)}")
        lines += [f"note: {n}" for n in self.notes]
        if with_problems:
            lines += [f"problem: {p.what}\n  fix: {p.fix}" for p in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class PushProgress:
    """One step of a push, for a progress bar: `phase` is create, upload, commit or done."""

    phase: str
    message: str
    done_bytes: int = 0
    total_bytes: int = 0


@dataclass(frozen=True)
class PushResult:
    """A finished push: the repo's URL, the commit's URL and what was sent."""

    url: str
    commit_url: str
    repo_id: str
    private: bool
    files: list[PushFile]


class PreflightError(ForgeError):
    """The preflight found problems; `preflight` holds the whole result (files, notes, every problem)."""

    def __init__(self, preflight: Preflight):
        self.preflight = preflight
        body = "\n".join(f"  - {p.what}\n    fix: {p.fix}" for p in preflight.problems)
        super().__init__(f"{len(preflight.problems)} problem(s), nothing was sent:\n{body}", where=preflight.url)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The server to push to: `endpoint`, else `HF_ENDPOINT` (read now, not at import), else huggingface.co."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def model_files(folder: Path) -> list[PushFile]:
    """The files of `folder` a push sends: top-level model files only (see MODEL_FILE_PATTERNS), sorted."""
    found = []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or not path.is_file():  # is_file follows a symlink to a file (HF cache)
            continue
        if any(fnmatch(path.name, pattern) for pattern in MODEL_FILE_PATTERNS):
            found.append(PushFile(path.name, path.stat().st_size))
    return found


def preflight(
    folder: Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
    allow_failed_roundtrip: bool = False,
) -> Preflight:
    """Check a push of `folder` to `repo_id` without sending anything but read-only requests.

    Local checks (files, round-trip, card) run first; then `whoami`, the repo's visibility and the card's
    YAML are checked on the server. Every problem found is in `problems`; nothing here uploads.

    Raises:
        ForgeError: when the server cannot be reached or fails (no check can be made then).
    """
    folder = Path(folder).expanduser().resolve()
    plan = Preflight(folder=folder, repo_id=repo_id.strip(), endpoint=resolve_endpoint(endpoint), private=private)
    if not folder.is_dir():
        plan.problems.append(Problem(f"{folder} is not a folder", "give the model folder (e.g. models/my-model)"))
        return plan
    _check_roundtrip(plan, allow_failed_roundtrip)
    repo_ok = _check_repo_id(plan)
    token, plan.token_source = _resolve_token(token)
    who = _server_step(plan, token, "checking the token", _whoami) if _can_reach_server(plan, token) else None
    if who is not None and repo_ok:
        _check_rights(plan, who)
        _server_step(plan, token, "checking the repo", _check_existing)
    _ensure_card(plan, repo_ok)
    plan.files = model_files(folder)
    _check_no_local_paths(plan)
    if not any(f.path.endswith(".safetensors") for f in plan.files):
        plan.problems.append(
            Problem("no *.safetensors weights in the folder", "fuse a run first, or pick a model folder")
        )
    if who is not None:
        _server_step(plan, token, "validating the card", _validate_card)
    if _xet_in_use() and plan.endpoint != DEFAULT_ENDPOINT:
        plan.notes.append("large files go by Xet; if this server has no Xet support, set HF_HUB_DISABLE_XET=1")
    return plan


def push(
    folder: Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
    allow_failed_roundtrip: bool = False,
    progress: Callable[[PushProgress], None] | None = None,
    on_preflight: Callable[[Preflight], None] | None = None,
) -> PushResult:
    """Preflight, then create the repo (private unless `private=False`) and send the files in one commit.

    `on_preflight` sees the preflight before anything is sent; `progress` gets one PushProgress per step.

    Raises:
        PreflightError: the preflight found problems (nothing was sent).
        ForgeError: the push failed (bad token, no rights, network, server error); the folder is unchanged
            and pushing again works.
    """
    plan = preflight(
        folder, repo_id, private=private, token=token, endpoint=endpoint, allow_failed_roundtrip=allow_failed_roundtrip
    )
    if on_preflight is not None:
        on_preflight(plan)
    if not plan.ok:
        raise PreflightError(plan)
    token, _ = _resolve_token(token)
    step = ["creating the repo"]  # what was under way when something failed, for the message
    try:
        return _send(plan, token, progress or (lambda _p: None), step)
    except Exception as e:
        raise (
            hub_error(e, plan.endpoint, plan.repo_id, token, doing=step[0]) or _push_failed(e, token, step[0])
        ) from e


def export_adapter_for_push(run_dir: Path, checkpoint: str = "best", repo_id: str | None = None) -> Path:
    """Export a run's adapter (not a fused model) to models/<run>-adapter for pushing; returns that folder.

    `repo_id` is where it will go (the card's usage snippet names it).
    """
    from .adapter import export_adapter

    return export_adapter(Path(run_dir).expanduser(), checkpoint, repo_id=repo_id)  # to models/<run>-adapter


def hub_error(exc: BaseException, endpoint: str, repo_id: str, token: str | None, doing: str) -> ForgeError | None:
    """The ForgeError (what happened, how to fix it) for a huggingface_hub failure; None if not a Hub failure.

    The token is scrubbed from every text that goes into the message.
    """
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    chain = _causes(exc)
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return ForgeError("offline mode is on (HF_HUB_OFFLINE=1)", endpoint, "unset HF_HUB_OFFLINE, then push again")
    http = next((e for e in chain if isinstance(e, HfHubHTTPError) and e.response is not None), None)
    if http is not None:
        error = _http_error(http.response.status_code, _server_says(http), endpoint, repo_id, doing)
    elif (net := next((e for e in chain if _is_network_error(e)), None)) is not None:
        error = _network_error(net, endpoint, doing)
    else:
        return None
    return ForgeError(
        _scrub(error.what, token), _scrub(error.where or "", token) or None, _scrub(error.fix or "", token)
    )


# ---- preflight: local checks


def _local_paths(folder: Path) -> list[str]:
    """Folders whose names would say something about this machine or its user if they were published:
    home, project and ForgeLLM's home, the model folder itself, and the run a fuse came from (which may
    be anywhere, e.g. under /tmp)."""
    from ..paths import PROJECT_ROOT, home

    found = [Path.home(), PROJECT_ROOT, home(), folder]
    checkpoint = (_json_file(folder / PROVENANCE_FILE) or {}).get("checkpoint")
    if isinstance(checkpoint, str) and Path(checkpoint).is_absolute():
        found.append(Path(checkpoint).parent.parent)  # runs/<id>/checkpoints/<step> -> runs/<id>
    names = {str(p) for p in found} | {str(p.resolve()) for p in found}  # /tmp and /private/tmp on macOS
    return sorted((p for p in names if len(p) > 1), key=len, reverse=True)


def _check_no_local_paths(plan: Preflight) -> None:
    """No text file that would be sent names a local folder (a config or card written with a path in it)."""
    suffixes = (".json", ".md", ".txt", ".jinja", ".yaml")
    local_paths = _local_paths(plan.folder)
    for item in plan.files:
        path = plan.folder / item.path
        if not path.name.endswith(suffixes) or item.size > 5_000_000:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        leaked = next((p for p in local_paths if p in text), None)
        if leaked:
            plan.problems.append(
                Problem(
                    f"{item.path} contains the local path {leaked}",
                    "remove it from the file (or regenerate the card), so the repo does not reveal this machine",
                )
            )


def _check_roundtrip(plan: Preflight, allow_failed: bool) -> None:
    """A ForgeLLM fuse is pushed only after its round-trip check passed (or with the explicit override)."""
    if not (plan.folder / PROVENANCE_FILE).is_file():
        return  # not a ForgeLLM fuse (an adapter export, a user's model): no round-trip to check
    result = read_roundtrip(plan.folder)
    if result is not None and result.identical is True:
        return
    why = "has no round-trip check" if result is None else "failed its round-trip check (identical: false)"
    if allow_failed:
        plan.notes.append(f"this fused model {why}: pushed anyway (override)")
        return
    plan.problems.append(
        Problem(
            f"this fused model {why} ({ROUNDTRIP_FILE}): it may not behave like the run's adapter",
            "run the round-trip check and fix the fuse, or override deliberately "
            "(CLI: --allow-failed-roundtrip; API: allow_failed_roundtrip=True)",
        )
    )


def _ensure_card(plan: Preflight, repo_ok: bool) -> None:
    """A card is required: a ForgeLLM fuse gets its card written (or rewritten to load this repo, while
    unedited); any other folder needs a README.md that is not mlx-lm's empty placeholder."""
    readme = plan.folder / CARD_FILE
    fused = (plan.folder / PROVENANCE_FILE).is_file()
    if fused:
        _write_fuse_card(plan, repo_ok)
    state = card_state(readme)
    if state == "absent" and not fused:  # a fuse whose card could not be written has that problem already
        plan.problems.append(
            Problem("the folder has no model card (README.md)", "write a README.md with YAML front matter")
        )
    elif state == "placeholder" and not fused:
        plan.problems.append(
            Problem(
                "the folder's README.md is mlx-lm's empty placeholder, not a model card",
                "write the card (the Publishing tab shows it for editing) before pushing",
            )
        )
    elif state in ("generated", "edited", "user"):
        _check_front_matter(plan, readme)
        if repo_ok and state != "user":
            _check_usage_names_repo(plan, readme)


def _write_fuse_card(plan: Preflight, repo_ok: bool) -> None:
    from .card import ensure_card

    try:
        written = ensure_card(plan.folder, repo_id=plan.repo_id if repo_ok and "/" in plan.repo_id else None)
    except ForgeError as e:
        plan.problems.append(Problem(f"could not write the model card: {e.what}", e.fix or "write README.md"))
        return
    if written:
        plan.notes.append(
            f"wrote the model card README.md for {plan.repo_id} (edit it before pushing if you like: an edited "
            "card is kept)"
        )


def _check_front_matter(plan: Preflight, readme: Path) -> None:
    text = read_text(readme)
    if text is None:
        plan.problems.append(Problem("README.md cannot be read as UTF-8 text", "save it as UTF-8"))
        return
    try:
        meta = parse_front_matter(text)
    except ValueError as e:
        plan.problems.append(Problem(f"README.md: {e}", "fix the YAML between the --- lines at the top"))
        return
    if meta is None:
        plan.notes.append("README.md has no YAML front matter: the Hub will show no license, base model or tags")


def _check_usage_names_repo(plan: Preflight, readme: Path) -> None:
    """A ForgeLLM card's usage snippet loads the repo it was written for: say so when that is not this one."""
    text = read_text(readme) or ""
    if "/" in plan.repo_id and "## Usage" in text and f'"{plan.repo_id}"' not in text:
        plan.notes.append(
            f"README.md's usage snippet does not load {plan.repo_id}: edit the card so Hub users can run it "
            "(an adapter: export it again with this repo id)"
        )


def _check_repo_id(plan: Preflight) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(plan.repo_id)
    except HFValidationError as e:
        plan.problems.append(
            Problem(f"repo id {plan.repo_id!r} is not valid: {e}", "use namespace/name, e.g. your-name/my-model")
        )
        return False
    return True


def _resolve_token(token: str | None) -> tuple[str | None, str | None]:
    """The token to use and where it came from (never the token itself in the second item)."""
    if token:
        return token.strip(), "the token field"
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"].strip(), "HF_TOKEN"
    from huggingface_hub import get_token

    found = get_token()
    return (found, "huggingface_hub login") if found else (None, None)


# ---- preflight: server checks


def _can_reach_server(plan: Preflight, token: str | None) -> bool:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        plan.problems.append(Problem("offline mode is on (HF_HUB_OFFLINE=1)", "unset HF_HUB_OFFLINE"))
        return False
    if not token:
        plan.problems.append(Problem("no Hugging Face token", _TOKEN_FIX.format(endpoint=plan.endpoint)))
        return False
    if not _well_formed(token):  # would fail inside the HTTP client, with the token in its error text
        plan.problems.append(
            Problem(
                f"the token from {plan.token_source} contains spaces, line breaks or non-ASCII characters",
                "copy the token again, alone (a token is one word of ASCII letters, digits and _), then retry",
            )
        )
        return False
    return True


def _well_formed(token: str) -> bool:
    return token.isascii() and token.isprintable() and not any(c.isspace() for c in token)


def _server_step(plan: Preflight, token: str, doing: str, check: Callable[[Preflight, Any], Any]) -> Any:
    """Run one read-only check against the server; a failure there is a ForgeError that names `doing`."""
    try:
        return check(plan, _api(plan.endpoint, token))
    except Exception as e:
        mapped = hub_error(e, plan.endpoint, plan.repo_id, token, doing)
        if mapped is None:
            raise
        raise mapped from e


def _whoami(plan: Preflight, api) -> dict | None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        who = api.whoami()
    except HfHubHTTPError as e:
        if e.response is None or e.response.status_code != 401:
            raise
        plan.problems.append(
            Problem(
                f"the server rejected the token (401; it came from {plan.token_source})",
                _TOKEN_FIX.format(endpoint=plan.endpoint),
            )
        )
        return None
    plan.user = who.get("name")
    if "/" not in plan.repo_id and plan.user:
        plan.repo_id = f"{plan.user}/{plan.repo_id}"
        plan.notes.append(f"no namespace given: pushing to {plan.repo_id}")
    return who


def _check_rights(plan: Preflight, who: dict) -> None:
    """Write rights on the namespace, as whoami-v2 reports them (token role, org role, fine-grained scopes)."""
    namespace, name = plan.repo_id.split("/", 1)
    own = f"push to {plan.user}/{name}"
    access = (who.get("auth") or {}).get("accessToken") or {}
    if access.get("role") == "read":
        plan.problems.append(Problem("the token is read-only", _TOKEN_FIX.format(endpoint=plan.endpoint)))
        return
    if access.get("role") == "fineGrained" and not _fine_grained_can_write(access, namespace, plan.repo_id):
        plan.problems.append(
            Problem(
                f"the fine-grained token cannot write to repos of {namespace!r}",
                f"edit the token at {plan.endpoint}/settings/tokens to allow writing to {namespace}'s repos",
            )
        )
        return
    # Hub names are unique regardless of case (`Alice` is `alice`): compare them so, never refuse on case.
    if namespace.lower() == (plan.user or "").lower():
        return
    org = next((o for o in who.get("orgs") or [] if str(o.get("name", "")).lower() == namespace.lower()), None)
    if org is None:
        plan.problems.append(Problem(f"{plan.user} is not a member of {namespace!r}", f"{own}, or join {namespace}"))
    elif org.get("roleInOrg") is None:
        plan.notes.append(f"the server did not say your role in {namespace}: it decides when the repo is created")
    elif org["roleInOrg"] not in WRITE_ROLES:
        plan.problems.append(
            Problem(
                f"your role in {namespace!r} is {org['roleInOrg']!r}, which cannot create or write repos",
                f"{own}, or ask an admin of {namespace} for the write role",
            )
        )


def _fine_grained_can_write(access: dict, namespace: str, repo_id: str) -> bool:
    scoped = (access.get("fineGrained") or {}).get("scoped")
    if not isinstance(scoped, list):
        return True  # a shape we do not know: the server decides (a refusal is mapped to a clear error)
    return any(
        str((entry.get("entity") or {}).get("name", "")).lower() in (namespace.lower(), repo_id.lower())
        and "repo.write" in entry.get("permissions", [])
        for entry in scoped
    )


def _check_existing(plan: Preflight, api) -> None:
    """An existing repo keeps its visibility (create_repo ignores `private` then): never publish by accident."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.model_info(plan.repo_id)
    except RepositoryNotFoundError:
        plan.repo_exists = False
        return
    plan.repo_exists = True
    if plan.private and info.private is False:
        plan.problems.append(
            Problem(
                f"{plan.repo_id} already exists and is PUBLIC: these files would be public",
                "push to a new repo name, make the repo private on the Hub, or choose public deliberately (--public)",
            )
        )
    elif not plan.private and info.private:
        plan.notes.append(f"{plan.repo_id} exists and is private: it stays private (change it in its settings)")


def _validate_card(plan: Preflight, api) -> None:
    """The server's own card check (`POST /api/validate-yaml`, what a commit with a README runs)."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    readme = plan.folder / CARD_FILE
    if not readme.is_file() or any(p.what.startswith(CARD_FILE) for p in plan.problems):
        return
    response = get_session().post(
        f"{plan.endpoint}/api/validate-yaml",
        json={"content": readme.read_text(encoding="utf-8"), "repoType": "model"},
        headers=build_hf_headers(token=api.token),
    )
    body = _json_or_empty(response)
    plan.notes += [f"card: {w.get('message')}" for w in body.get("warnings", [])]
    if response.status_code == 400:
        for error in body.get("errors") or [{"message": response.text}]:
            plan.problems.append(Problem(f"the card's YAML is refused: {error.get('message')}", "fix README.md"))
        return
    hf_raise_for_status(response)


# ---- the push


def _send(plan: Preflight, token: str, progress: Callable[[PushProgress], None], step: list[str]) -> PushResult:
    from huggingface_hub import CommitOperationAdd

    api = _api(plan.endpoint, token)
    total = plan.total_bytes
    progress(PushProgress("create", f"creating {plan.repo_id} ({'private' if plan.private else 'public'})", 0, total))
    url = api.create_repo(plan.repo_id, private=plan.private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(plan.folder / f.path)) for f in plan.files
    ]
    done = 0
    for op, f in zip(operations, plan.files, strict=True):  # one file at a time, so progress can be reported per file
        step[0] = f"uploading {f.path}"
        progress(PushProgress("upload", f"{step[0]} ({human_size(f.size)})", done, total))
        api.preupload_lfs_files(plan.repo_id, additions=[op], free_memory=False)
        done += f.size
    step[0] = "committing"
    progress(PushProgress("commit", f"committing {len(operations)} file(s)", done, total))
    commit = api.create_commit(
        plan.repo_id, operations, commit_message=f"Upload {plan.folder.name} with ForgeLLM", num_threads=1
    )
    repo_url = str(url) or plan.url
    progress(PushProgress("done", f"pushed: {repo_url}", total, total))
    return PushResult(repo_url, commit.commit_url, plan.repo_id, plan.private, list(plan.files))


_TIMEOUTS_SET = False


def _api(endpoint: str, token: str):
    """An HfApi for `endpoint`; huggingface_hub's shared client gets finite timeouts (its default is none)."""
    global _TIMEOUTS_SET
    from huggingface_hub import HfApi, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    if not _TIMEOUTS_SET:  # once per process: replacing the factory closes the shared client
        set_client_factory(lambda: _with_timeouts(default_client_factory()))
        _TIMEOUTS_SET = True
    return HfApi(endpoint=endpoint, token=token)


def _with_timeouts(client):
    client.timeout = _httpx().Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    return client


# ---- errors


def _http_error(status: int, server: str, endpoint: str, repo_id: str, doing: str) -> ForgeError:
    said = f": {server}" if server else ""
    namespace = repo_id.split("/", 1)[0]
    if status == 401:
        return ForgeError(
            f"the server rejected the token (401) while {doing}{said}", endpoint, _TOKEN_FIX.format(endpoint=endpoint)
        )
    if status == 404 and doing == "checking the token":
        return ForgeError(
            f"{endpoint} does not answer like a Hugging Face Hub (404 on /api/whoami-v2)",
            endpoint,
            "check the endpoint (HF_ENDPOINT or --endpoint): e.g. https://huggingface.co",
        )
    if status in (403, 404):
        return ForgeError(
            f"no write access to {repo_id} ({status}) while {doing}{said}",
            endpoint,
            f"push under your own name, ask an admin of {namespace} for the write role, "
            "or use a token with write access",
        )
    if status == 429:
        return ForgeError(
            f"rate-limited by the server (429) while {doing}", endpoint, "wait a few minutes, then push again"
        )
    if status >= 500:
        return ForgeError(
            f"the server failed ({status}) while {doing}{said}",
            endpoint,
            "nothing is in the repo until the final commit succeeds and your folder is unchanged: push again "
            "(files already uploaded are not sent twice); if it persists, check the server's status page",
        )
    return ForgeError(
        f"the server refused the push ({status}) while {doing}{said}", endpoint, "fix what it names, then push again"
    )


def _push_failed(exc: BaseException, token: str | None, doing: str) -> ForgeError:
    """Any other failure during the push (e.g. raised inside hf_xet): named, with the cause chained."""
    return ForgeError(
        _scrub(f"the push failed while {doing}: {type(exc).__name__}: {exc}", token)[:600],
        fix="your folder is unchanged: push again. Against a server other than huggingface.co without Xet "
        "support, set HF_HUB_DISABLE_XET=1",
    )


def _network_error(exc: BaseException, endpoint: str, doing: str) -> ForgeError:
    timeout = isinstance(exc, (TimeoutError, _httpx().TimeoutException))
    what = f"{endpoint} did not answer in time" if timeout else f"cannot reach {endpoint}"
    return ForgeError(
        f"{what} while {doing} ({type(exc).__name__})",
        endpoint,
        "check the network connection (and HF_ENDPOINT, proxy settings), then push again: your folder is unchanged",
    )


def _is_network_error(exc: BaseException) -> bool:
    return isinstance(exc, (ConnectionError, TimeoutError, _httpx().TransportError))


def _server_says(err) -> str:
    message = getattr(err, "server_message", None) or ""
    return " ".join(str(message).split())[:300]


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _scrub(text: str, token: str | None) -> str:
    # A real token is 30+ characters; a very short "token" would only mangle ordinary words.
    return text.replace(token, "<token>") if token and len(token) >= 8 else text


def _httpx():
    try:
        import httpx2 as httpx  # huggingface_hub 2.x
    except ImportError:  # huggingface_hub 1.x
        import httpx
    return httpx


def _xet_in_use() -> bool:
    """huggingface_hub sends large files by Xet when hf_xet is installed, unless HF_HUB_DISABLE_XET is set."""
    from importlib.util import find_spec

    from huggingface_hub import constants

    return not constants.HF_HUB_DISABLE_XET and find_spec("hf_xet") is not None


def _json_file(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _json_or_empty(response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

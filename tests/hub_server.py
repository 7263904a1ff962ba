"""A small Hub-compatible HTTP server on 127.0.0.1 for offline push tests.

It speaks the part of the Hugging Face Hub API that huggingface_hub's upload and download calls use (measured against
huggingface_hub 2.4.0 with Xet disabled, i.e. the plain LFS path): whoami-v2, repos/create, model info
(404 + `X-Error-Code: RepoNotFound` when missing), validate-yaml, preupload, the git-lfs batch API with
single PUT and multipart PUT (ETag per part, then a completion POST), the NDJSON commit (small files
base64 inline, LFS files by sha256), and for downloads the file tree and `resolve` (HEAD for a file's
metadata, GET for its bytes, Range honoured). It keeps what it receives (repos -> files -> bytes, private flag,
commits) and logs every request, so a test can check exactly what arrived and what was never sent.

Faults: `fail(route, status, times)` answers a route with an HTTP error, `drop(route, times, path_has)`
reads part of the request body and closes the connection without answering (a download: sends half the
file, then closes), `hang(route, seconds)` answers late. `times=None` means always; `path_has` limits a
drop to paths containing it. The whole request body is read before any answer (an early answer would
break the next request on the keep-alive connection).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx", ".model")  # the Hub's .gitattributes
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files go by LFS whatever their name
WRITE_ROLES = ("admin", "write", "contributor")
WRITE_ROUTES = ("create", "preupload", "batch", "put", "part", "complete", "commit")  # every route that uploads

_REPO = r"(?P<repo>[\w.\-]+/[\w.\-]+)"
_OID = r"(?P<oid>[0-9a-f]{64})"
ROUTES = [  # (method, path regex, route name)
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create"),
    ("GET", rf"/api/models/{_REPO}(?:/revision/[^/]+)?", "info"),
    ("POST", r"/api/validate-yaml", "validate"),
    ("POST", rf"/api/models/{_REPO}/preupload/[^/]+", "preupload"),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", "batch"),
    ("PUT", rf"/lfs/{_OID}", "put"),
    ("PUT", rf"/lfs/{_OID}/part/(?P<part>\d+)", "part"),
    ("POST", rf"/lfs/{_OID}/complete", "complete"),
    ("POST", rf"/api/models/{_REPO}/commit/[^/]+", "commit"),
    ("GET", rf"/api/models/{_REPO}/tree/[^/]+", "tree"),
    ("HEAD", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<name>.+)", "metadata"),
    ("GET", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<name>.+)", "download"),
]


@dataclass
class User:
    """An account the server knows: its name, its orgs ({org: roleInOrg}) and its token's role."""

    name: str
    orgs: dict[str, str] = field(default_factory=dict)
    token_role: str = "write"


@dataclass
class Repo:
    id: str
    private: bool
    creator: str
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)


@dataclass
class Fault:
    route: str
    times: int | None  # None: every time
    status: int | None = None
    drop: bool = False
    hang_s: float = 0.0
    path_has: str = ""  # only requests whose path contains this


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    route: str
    status: int  # 0: the connection was dropped


class HubServer:
    """Start with `with HubServer({token: User(...)}) as hub:`; point HfApi(endpoint=hub.url) at it."""

    def __init__(self, users: dict[str, User], multipart_chunk: int = 5 * 1024 * 1024):
        self.users = users
        self.multipart_chunk = multipart_chunk
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # oid (sha256) -> bytes received by LFS
        self.parts: dict[str, dict[int, bytes]] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.released = threading.Event()  # ends every hang at shutdown
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # ---- faults

    def fail(self, route: str, status: int = 500, times: int | None = 1) -> None:
        self.faults.append(Fault(route, times, status=status))

    def drop(self, route: str, times: int | None = 1, path_has: str = "") -> None:
        self.faults.append(Fault(route, times, drop=True, path_has=path_has))

    def hang(self, route: str, seconds: float, times: int | None = 1) -> None:
        self.faults.append(Fault(route, times, hang_s=seconds))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, route: str, path: str = "") -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path_has not in path:
                    continue
                if fault.route == route and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # ---- what arrived

    def routes(self) -> list[str]:
        return [r.route for r in self.requests]

    def uploads_seen(self) -> list[Request]:
        """Requests to any route that creates a repo or sends file content."""
        return [r for r in self.requests if r.route in WRITE_ROUTES]

    def can_write(self, user: User, namespace: str) -> bool:
        if user.token_role == "read":
            return False
        return namespace == user.name or user.orgs.get(namespace) in WRITE_ROLES

    def whoami(self, token: str, user: User) -> dict:
        return {
            "type": "user",
            "id": hashlib.sha1(user.name.encode()).hexdigest()[:24],
            "name": user.name,
            "fullname": user.name.title(),
            "email": f"{user.name}@example.org",
            "orgs": [
                {"type": "org", "name": org, "fullname": org, "roleInOrg": role} for org, role in user.orgs.items()
            ],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": user.token_role}},
        }


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_hub = hub

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real client uses it
    server_hub: HubServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms per request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    # ---- plumbing

    def _dispatch(self) -> None:
        hub = self.server_hub
        path = unquote(urlsplit(self.path).path)
        route, params = "unknown", {}
        for method, pattern, name in ROUTES:
            if method == self.command and (m := re.fullmatch(pattern, path)):
                route, params = name, m.groupdict()
                break
        fault = hub.take_fault(route, path)
        if fault is not None and fault.drop and route == "download":
            return self._send_file(**params, cut=True)  # half the file arrives, then the line goes dead
        if fault is not None and fault.drop:
            self._read_body(limit=256 * 1024)  # part of the upload arrives, then the line goes dead
            self._log(route, 0)
            self.close_connection = True
            return
        body = self._read_body()
        if fault is not None and fault.hang_s:
            hub.released.wait(fault.hang_s)
        if fault is not None and fault.status:
            return self._reply(route, fault.status, {"error": f"injected {fault.status} on {route}"})
        if route == "unknown":
            return self._reply(route, 404, {"error": f"no route {self.command} {path}"})
        if route in ("metadata", "download"):
            return self._send_file(**params)
        status, payload, headers = getattr(self, f"_{route}")(body, **params)
        self._reply(route, status, payload, headers)

    def _send_file(self, repo: str, rev: str, name: str, cut: bool = False) -> None:
        """A file of a repo as `hf_hub_download` fetches it: HEAD for its metadata, GET for its bytes
        (a Range request gets the rest of the file); `cut` sends half of it and closes the connection."""
        route = "metadata" if self.command == "HEAD" else "download"
        found = self.server_hub.repos.get(repo)
        user = self._user()
        visible = found is not None and (
            not found.private or (user and self.server_hub.can_write(user, repo.split("/")[0]))
        )
        if not visible:
            return self._reply(route, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if name not in found.files:
            return self._reply(route, 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        data = found.files[name]
        start = int(m.group(1)) if (m := re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))) else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", found.commits[-1]["oid"] if found.commits else "0" * 40)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data[start : start + (len(data) - start) // 2] if cut else data[start:])
        if cut:
            self.close_connection = True
            self.wfile.flush()
            self.request.shutdown(socket.SHUT_RDWR)
        self._log(route, 0 if cut else 200)

    def _read_body(self, limit: int | None = None) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked(limit)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length if limit is None else min(length, limit))

    def _read_chunked(self, limit: int | None) -> bytes:
        data = bytearray()
        while limit is None or len(data) < limit:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            data += self.rfile.read(size)
            self.rfile.readline()  # CRLF after each chunk
        return bytes(data)

    def _reply(self, route: str, status: int, payload, headers: dict | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400 and isinstance(payload, dict) and "error" in payload:
            self.send_header("X-Error-Message", str(payload["error"]))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self._log(route, status)

    def _log(self, route: str, status: int) -> None:
        with self.server_hub.lock:
            self.server_hub.requests.append(Request(self.command, self.path, route, status))

    def _user(self) -> User | None:
        auth = self.headers.get("Authorization", "")
        return self.server_hub.users.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None

    def _writer(self, namespace: str) -> tuple[User | None, tuple | None]:
        """The caller if it may write to `namespace`, else the error reply to send."""
        user = self._user()
        if user is None:
            return None, (401, {"error": "Invalid credentials in Authorization header"}, None)
        if not self.server_hub.can_write(user, namespace):
            return None, (403, {"error": f"You don't have the rights to write to {namespace}"}, None)
        return user, None

    def _repo(self, repo_id: str) -> tuple[Repo | None, tuple | None]:
        user, refusal = self._writer(repo_id.split("/")[0])
        if refusal:
            return None, refusal
        repo = self.server_hub.repos.get(repo_id)
        if repo is None:
            return None, (404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo, None

    # ---- routes: each returns (status, payload, extra headers)

    def _whoami(self, body: bytes):
        user = self._user()
        if user is None:
            return 401, {"error": "Invalid credentials in Authorization header"}, None
        token = self.headers["Authorization"].removeprefix("Bearer ").strip()
        return 200, self.server_hub.whoami(token, user), None

    def _create(self, body: bytes):
        request = json.loads(body)
        namespace = request.get("organization") or (self._user().name if self._user() else "")
        user, refusal = self._writer(namespace)
        if refusal:
            return refusal
        repo_id = f"{namespace}/{request['name']}"
        url = f"{self.server_hub.url}/{repo_id}"
        hub = self.server_hub
        with hub.lock:
            if repo_id in hub.repos:
                return 409, {"error": "You already created this model repo", "url": url}, None
            private = request.get("private", request.get("visibility") == "private")
            hub.repos[repo_id] = Repo(repo_id, bool(private), user.name)
        return 200, {"url": url, "name": repo_id, "id": repo_id}, None

    def _info(self, body: bytes, repo: str):
        found = self.server_hub.repos.get(repo)
        user = self._user()
        visible = found is not None and (
            not found.private or (user and self.server_hub.can_write(user, repo.split("/")[0]))
        )
        if not visible:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        sha = found.commits[-1]["oid"] if found.commits else "0" * 40
        siblings = [{"rfilename": p} for p in sorted(found.files)]
        return 200, {"id": repo, "private": found.private, "sha": sha, "siblings": siblings}, None

    def _tree(self, body: bytes, repo: str):
        """Every file of the repo (one page; the real Hub paginates long listings with a Link header)."""
        status, info, headers = self._info(body, repo)
        if status != 200:
            return status, info, headers
        files = self.server_hub.repos[repo].files
        entries = []
        for name in sorted(files):
            entry = {"type": "file", "path": name, "size": len(files[name])}
            entry["oid"] = hashlib.sha1(b"blob %d\0" % len(files[name]) + files[name]).hexdigest()  # git's blob id
            if name.endswith(LFS_SUFFIXES) or len(files[name]) >= LFS_MIN_SIZE:
                sha256 = hashlib.sha256(files[name]).hexdigest()
                entry["lfs"] = {"oid": sha256, "size": len(files[name]), "pointerSize": 134}
            entries.append(entry)
        return 200, entries, None

    def _validate(self, body: bytes):
        content = json.loads(body).get("content", "")
        match = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        if not match:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}, None
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError as e:
            return 400, {"errors": [{"message": f"Invalid YAML: {e}"}]}, None
        if meta is not None and not isinstance(meta, dict):
            return 400, {"errors": [{"message": "metadata must be a mapping"}]}, None
        base = (meta or {}).get("base_model")
        if isinstance(base, str) and base.startswith(("/", ".", "~")):
            return 400, {"errors": [{"message": f'"base_model" with value "{base}" is not a valid model id'}]}, None
        return 200, {"errors": [], "warnings": []}, None

    def _preupload(self, body: bytes, repo: str):
        found, refusal = self._repo(repo)
        if refusal:
            return refusal
        files = []
        for f in json.loads(body)["files"]:
            lfs = f["size"] >= LFS_MIN_SIZE or f["path"].endswith(LFS_SUFFIXES)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        return 200, {"files": files, "commitOid": found.commits[-1]["oid"] if found.commits else None}, None

    def _batch(self, body: bytes, repo: str):
        found, refusal = self._repo(repo)
        if refusal:
            return refusal
        objects = [self._lfs_action(o["oid"], o["size"]) for o in json.loads(body)["objects"]]
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, None

    def _lfs_action(self, oid: str, size: int) -> dict:
        base, chunk = f"{self.server_hub.url}/lfs/{oid}", self.server_hub.multipart_chunk
        if oid in self.server_hub.lfs:
            return {"oid": oid, "size": size}  # already stored: no upload action
        if size <= chunk:
            return {"oid": oid, "size": size, "authenticated": True, "actions": {"upload": {"href": base}}}
        n_parts = -(-size // chunk)
        header = {"chunk_size": str(chunk), **{str(i): f"{base}/part/{i}" for i in range(1, n_parts + 1)}}
        return {
            "oid": oid,
            "size": size,
            "authenticated": True,
            "actions": {"upload": {"href": f"{base}/complete", "header": header}},
        }

    def _put(self, body: bytes, oid: str):
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "sha256 of the body does not match the oid"}, None
        with self.server_hub.lock:
            self.server_hub.lfs[oid] = body
        return 200, b"", None

    def _part(self, body: bytes, oid: str, part: str):
        with self.server_hub.lock:
            self.server_hub.parts.setdefault(oid, {})[int(part)] = body
        return 200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}

    def _complete(self, body: bytes, oid: str):
        request = json.loads(body)
        stored = self.server_hub.parts.get(oid, {})
        parts = sorted(request["parts"], key=lambda p: p["partNumber"])
        if [p["partNumber"] for p in parts] != sorted(stored) or any(
            p["etag"].strip('"') != hashlib.md5(stored[p["partNumber"]]).hexdigest() for p in parts
        ):
            return 400, {"error": "parts or etags do not match what was uploaded"}, None
        return self._put(b"".join(stored[p["partNumber"]] for p in parts), oid)

    def _commit(self, body: bytes, repo: str):
        found, refusal = self._repo(repo)
        if refusal:
            return refusal
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files: dict[str, bytes] = {}
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                content = self.server_hub.lfs.get(value["oid"])
                if content is None or len(content) != value.get("size", len(content)):
                    return 422, {"error": f"LFS object {value['oid']} of {value['path']} was never uploaded"}, None
                files[value["path"]] = content
        oid = hashlib.sha1(body).hexdigest()
        with self.server_hub.lock:
            found.files.update(files)
            found.commits.append({"oid": oid, "summary": header.get("summary"), "files": sorted(files)})
        url = f"{self.server_hub.url}/{repo}/commit/{oid}"
        return (
            200,
            {"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None},
            None,
        )

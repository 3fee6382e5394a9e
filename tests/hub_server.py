"""A fake Hugging Face Hub on 127.0.0.1, for tests of adaptermath's Hub support.

It serves the HTTP endpoints that huggingface_hub's real client code (2.x) calls to download and
upload model repositories, so tests run ``snapshot_download``, ``HfApi.create_repo``,
``create_branch`` and ``upload_folder`` unchanged against it (point them at :attr:`FakeHub.url`
with ``endpoint=`` or ``HF_ENDPOINT``):

* ``GET  /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: model info (``sha`` is the
  resolved commit);
* ``GET  /api/models/{repo}/tree/{rev}[/{path}]``: the file listing ``snapshot_download`` filters;
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``: file metadata (``X-Repo-Commit``, ``ETag``,
  ``Content-Length``) and content;
* ``POST /api/repos/create``, ``POST /api/models/{repo}/branch/{branch}``;
* ``POST /api/models/{repo}/preupload/{rev}``: every file is answered ``"regular"``, so the client
  sends contents base64-encoded inside the commit (no LFS or Xet transfer);
* ``POST /api/models/{repo}/commit/{rev}`` (ndjson; ``?create_pr=1`` opens a pull request);
* ``POST /api/models/{repo}/discussions`` and ``GET .../discussions/{num}``: pull requests as the
  upload pipeline opens them;
* ``POST /api/validate-yaml``: checks a README's front matter (YAML mapping, ``model-index`` shape).

Errors follow the Hub's conventions (``X-Error-Code`` RepoNotFound / RevisionNotFound /
GatedRepo / EntryNotFound, 401 with "Invalid credentials in Authorization header" for an unknown
token), so the client raises its own exception classes. Private repos are visible only to their
owner, gated repos only to users granted access. State lives in memory: repos -> branches ->
commits -> files. Every request is recorded in :attr:`FakeHub.requests` (never the token itself).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

MAX_BODY_BYTES = 64 * 1024 * 1024
REQUEST_TIMEOUT_S = 10.0
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob: sha1(b"blob {len}\\0" + content), as the Hub's ETag for git files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeCommit:
    """One commit: the full file tree it points to."""

    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class FakePullRequest:
    """A pull request: a ``refs/pr/{num}`` branch opened against ``base``."""

    num: int
    title: str
    description: str
    base: str


@dataclass
class FakeRepo:
    """A model repository with its branches, commits and pull requests."""

    repo_id: str
    private: bool = False
    gated: bool = False
    granted: set[str] = field(default_factory=set)
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, FakeCommit] = field(default_factory=dict)
    pull_requests: dict[int, FakePullRequest] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> str | None:
        """The commit sha a branch name, ``refs/pr/N`` or full commit sha points to."""
        if revision in self.branches:
            return self.branches[revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in self.branches:
            return self.branches[revision[len("refs/heads/") :]]
        if COMMIT_SHA.match(revision) and revision in self.commits:
            return revision
        return None

    def add_commit(self, branch: str, files: dict[str, bytes], message: str) -> str:
        """Commit ``files`` (the whole new tree) on ``branch``; returns the new commit sha."""
        parent = self.branches.get(branch)
        digest = hashlib.sha1()
        digest.update(f"{self.repo_id}\0{branch}\0{parent}\0{message}\0{len(self.commits)}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        sha = digest.hexdigest()
        self.commits[sha] = FakeCommit(sha=sha, parent=parent, message=message, files=dict(files))
        self.branches[branch] = sha
        return sha


@dataclass
class RecordedRequest:
    """What the server saw: method, path, query, the authenticated user (never the token), status."""

    method: str
    path: str
    query: dict[str, list[str]]
    user: str | None
    authorization_sent: bool
    status: int = 0


class HubError(Exception):
    """Raised inside a handler to answer with an error status and the Hub's error headers."""

    def __init__(
        self, status: int, message: str, code: str | None = None, commit: str | None = None, extra: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.commit = commit
        self.extra = extra or {}


class FakeHub:
    """An in-memory Hub served over HTTP on a random loopback port.

    ``tokens`` maps access tokens to user names; a user may write to repos in their own namespace.
    Use as a context manager (or call :meth:`start` / :meth:`stop`).
    """

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens: dict[str, str] = dict(tokens or {})
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[str] = []
        self.server_errors: list[str] = []
        self.lock = threading.RLock()
        self._next_discussion = 1
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Hub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- test helpers

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes] | None = None,
        *,
        private: bool = False,
        gated: bool = False,
        granted: set[str] | None = None,
        message: str = "initial commit",
    ) -> str:
        """Create ``repo_id`` with ``files`` committed on main; returns the commit sha."""
        with self.lock:
            repo = FakeRepo(repo_id=repo_id, private=private, gated=gated, granted=set(granted or ()))
            self.repos[repo_id] = repo
            return repo.add_commit("main", {".gitattributes": GITATTRIBUTES, **(files or {})}, message)

    def commit_files(self, repo_id: str, files: dict[str, bytes], *, branch: str = "main", message: str = "update") -> str:
        """Add or replace ``files`` on ``branch`` (created from main when missing); returns the sha."""
        with self.lock:
            repo = self.repos[repo_id]
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            tree = dict(repo.commits[repo.branches[branch]].files)
            tree.update(files)
            return repo.add_commit(branch, tree, message)

    def files_at(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (a copy)."""
        with self.lock:
            repo = self.repos[repo_id]
            sha = repo.resolve(revision)
            if sha is None:
                raise KeyError(revision)
            return dict(repo.commits[sha].files)

    @staticmethod
    def folder_files(folder: str | Path) -> dict[str, bytes]:
        """Every file under ``folder`` as {relative posix path: bytes} (to seed a repo)."""
        root = Path(folder)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    def api_requests(self, method: str | None = None, contains: str = "") -> list[RecordedRequest]:
        """Recorded requests filtered by method and a substring of the path."""
        with self.lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]


class _HubHandler(BaseHTTPRequestHandler):
    """Routes one request to the fake Hub (bound to a :class:`FakeHub` through the ``hub`` attribute)."""

    hub: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_S

    ROUTES: list[tuple[str, re.Pattern[str], str]] = [
        ("GET", re.compile(r"^/api/models/([^/]+/[^/]+)$"), "model_info"),
        ("GET", re.compile(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$"), "model_info"),
        ("GET", re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$"), "tree"),
        ("GET", re.compile(r"^/api/models/([^/]+/[^/]+)/discussions/(\d+)$"), "discussion_details"),
        ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
        ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
        ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
        ("POST", re.compile(r"^/api/models/([^/]+/[^/]+)/branch/([^/]+)$"), "create_branch"),
        ("POST", re.compile(r"^/api/models/([^/]+/[^/]+)/preupload/([^/]+)$"), "preupload"),
        ("POST", re.compile(r"^/api/models/([^/]+/[^/]+)/commit/([^/]+)$"), "commit"),
        ("POST", re.compile(r"^/api/models/([^/]+/[^/]+)/discussions$"), "create_discussion"),
        ("HEAD", re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$"), "resolve"),
        ("GET", re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$"), "resolve"),
    ]

    # ----------------------------------------------------------------------------- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.user, token_sent, token_valid = self._authenticate()
        record = RecordedRequest(method, unquote(split.path), self.query, self.user, token_sent)
        with self.hub.lock:
            self.hub.requests.append(record)
        try:
            self.body = self._read_body()
            if token_sent and not token_valid:
                raise HubError(401, INVALID_CREDENTIALS)
            for route_method, pattern, name in self.ROUTES:
                match = pattern.match(split.path)
                if route_method == method and match:
                    args = [unquote(group) if group is not None else None for group in match.groups()]
                    with self.hub.lock:
                        status, payload, headers = getattr(self, f"_{name}")(*args)
                    break
            else:
                with self.hub.lock:
                    self.hub.unhandled.append(f"{method} {split.path}")
                raise HubError(404, f"no such endpoint: {method} {split.path}")
        except HubError as error:
            status, payload, headers = error.status, {"error": error.message, **error.extra}, {}
            if error.code:
                headers["X-Error-Code"] = error.code
            headers["X-Error-Message"] = error.message
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
        except Exception as error:  # a bug in the fake: record it so the test fails loudly
            with self.hub.lock:
                self.hub.server_errors.append(f"{method} {split.path}: {error!r}")
            status, payload, headers = 500, {"error": repr(error)}, {}
        record.status = status
        self._respond(status, payload, headers, include_body=method != "HEAD")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise HubError(413, "request body too large for the fake Hub")
        return self.rfile.read(length) if length else b""

    def _authenticate(self) -> tuple[str | None, bool, bool]:
        header = self.headers.get("Authorization")
        if not header:
            return None, False, True
        scheme, _, token = header.partition(" ")
        user = self.hub.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        return user, True, user is not None

    def _respond(self, status: int, payload: Any, headers: dict[str, str], include_body: bool) -> None:
        if isinstance(payload, bytes):
            body, content_type = payload, "application/octet-stream"
        else:
            body, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", headers.pop("Content-Length", str(len(body))))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if include_body:
            self.wfile.write(body)

    # ----------------------------------------------------------------------------- access control

    def _readable_repo(self, repo_id: str) -> FakeRepo:
        repo = self.hub.repos.get(repo_id)
        hidden = repo is None or (repo.private and self.user != repo.owner and self.user not in repo.granted)
        if hidden:
            # The Hub does not reveal whether a repo exists to someone who may not see it.
            raise HubError(401 if self.user is None else 404, "Repository not found", "RepoNotFound")
        assert repo is not None
        if repo.gated and self.user != repo.owner and self.user not in repo.granted:
            if self.user is None:
                raise HubError(401, "Access to this model is restricted: log in to request access", "GatedRepo")
            raise HubError(403, "Access to this model is restricted and you are not in the authorized list", "GatedRepo")
        return repo

    def _writable_repo(self, repo_id: str) -> FakeRepo:
        repo = self._readable_repo(repo_id)
        if self.user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    @staticmethod
    def _commit_or_404(repo: FakeRepo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _base_url(self) -> str:
        return self.hub.url

    # ----------------------------------------------------------------------------- read endpoints

    def _model_info(self, repo_id: str, revision: str | None = None) -> tuple[int, Any, dict[str, str]]:
        repo = self._readable_repo(repo_id)
        sha = self._commit_or_404(repo, revision or "main")
        files = repo.commits[sha].files
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo.owner,
            "sha": sha,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }
        return 200, info, {}

    def _tree(self, repo_id: str, revision: str, path: str | None) -> tuple[int, Any, dict[str, str]]:
        repo = self._readable_repo(repo_id)
        sha = self._commit_or_404(repo, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path else ""
        entries: dict[str, dict[str, Any]] = {}
        for file_path, content in sorted(repo.commits[sha].files.items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix) :].split("/")
            depth = len(rest) if recursive else 1
            for level in range(1, min(depth, len(rest) - 1) + 1):
                folder = prefix + "/".join(rest[:level])
                entries.setdefault(
                    folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": folder}
                )
            if recursive or len(rest) == 1:
                entries[file_path] = {"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": file_path}
        if path and not entries:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound", commit=sha)
        return 200, list(entries.values()), {}

    def _resolve(self, repo_id: str, revision: str, path: str) -> tuple[int, Any, dict[str, str]]:
        repo = self._readable_repo(repo_id)
        sha = self._commit_or_404(repo, revision)
        content = repo.commits[sha].files.get(path)
        if content is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit=sha)
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{git_blob_sha1(content)}"',
            "Content-Length": str(len(content)),
        }
        return 200, content, headers

    def _discussion_details(self, repo_id: str, num: str) -> tuple[int, Any, dict[str, str]]:
        repo = self._readable_repo(repo_id)
        pull_request = repo.pull_requests.get(int(num))
        if pull_request is None:
            raise HubError(404, f"Discussion {num} not found")
        details = {
            "num": pull_request.num,
            "title": pull_request.title,
            "status": "open",
            "isPullRequest": True,
            "createdAt": "2024-01-01T00:00:00.000Z",
            "author": {"name": repo.owner},
            "repo": {"name": repo_id, "type": "model"},
            "events": [],
            "changes": {"base": f"refs/heads/{pull_request.base}"},
            "filesWithConflicts": [],
            "diff": "",
        }
        return 200, details, {}

    def _whoami(self) -> tuple[int, Any, dict[str, str]]:
        if self.user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        return 200, {"type": "user", "name": self.user, "orgs": [], "auth": {"type": "access_token"}}, {}

    # ----------------------------------------------------------------------------- write endpoints

    def _json_body(self) -> dict[str, Any]:
        try:
            payload = json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"malformed JSON body: {error}") from error
        if not isinstance(payload, dict):
            raise HubError(400, "JSON body must be an object")
        return payload

    def _create_repo(self) -> tuple[int, Any, dict[str, str]]:
        if self.user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        payload = self._json_body()
        if payload.get("type", "model") != "model":
            raise HubError(400, "the fake Hub only hosts model repositories")
        namespace = payload.get("organization") or self.user
        repo_id = f"{namespace}/{payload['name']}"
        if namespace != self.user:
            raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace}")
        if repo_id in self.hub.repos:
            # The Hub answers a conflict with the existing repo's url (create_repo(exist_ok=True) reads it).
            raise HubError(409, "You already created this model repo", extra={"url": f"{self._base_url()}/{repo_id}"})
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo = FakeRepo(repo_id=repo_id, private=private)
        repo.add_commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self.hub.repos[repo_id] = repo
        return 200, {"url": f"{self._base_url()}/{repo_id}", "name": repo_id, "id": repo_id}, {}

    def _create_branch(self, repo_id: str, branch: str) -> tuple[int, Any, dict[str, str]]:
        repo = self._writable_repo(repo_id)
        start = self._json_body().get("startingPoint") or "main"
        sha = self._commit_or_404(repo, start)
        if branch in repo.branches:
            raise HubError(409, "Reference already exists")
        repo.branches[branch] = sha
        return 200, {}, {}

    def _preupload(self, repo_id: str, revision: str) -> tuple[int, Any, dict[str, str]]:
        repo = self._writable_repo(repo_id)
        sha = self._commit_or_404(repo, revision)
        existing = repo.commits[sha].files
        answers = []
        for entry in self._json_body().get("files", []):
            path = entry["path"]
            oid = git_blob_sha1(existing[path]) if path in existing else None
            answers.append({"path": path, "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": answers, "commitOid": sha}, {}

    def _open_pull_request(self, repo: FakeRepo, base: str, title: str, description: str) -> FakePullRequest:
        num = self.hub._next_discussion
        self.hub._next_discussion += 1
        pull_request = FakePullRequest(num=num, title=title, description=description, base=base)
        repo.pull_requests[num] = pull_request
        repo.branches[f"refs/pr/{num}"] = self._commit_or_404(repo, base)
        return pull_request

    def _create_discussion(self, repo_id: str) -> tuple[int, Any, dict[str, str]]:
        repo = self._readable_repo(repo_id)
        if self.user is None:
            raise HubError(401, "You must be authenticated to open a pull request")
        payload = self._json_body()
        if not payload.get("pullRequest"):
            raise HubError(400, "the fake Hub only opens pull requests, not plain discussions")
        pull_request = self._open_pull_request(repo, "main", payload.get("title", ""), payload.get("description", ""))
        return 200, {"num": pull_request.num, "url": f"{self._base_url()}/{repo_id}/discussions/{pull_request.num}"}, {}

    def _commit(self, repo_id: str, revision: str) -> tuple[int, Any, dict[str, str]]:
        create_pr = self.query.get("create_pr", ["0"])[0] == "1"
        repo = self._readable_repo(repo_id) if create_pr else self._writable_repo(repo_id)
        if create_pr and self.user is None:
            raise HubError(401, "You must be authenticated to open a pull request")
        head = self._commit_or_404(repo, revision)
        if not create_pr and revision not in repo.branches:
            raise HubError(400, f"Can only commit to a branch, not {revision}")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and not head.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.commits[head].files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "regular files must be base64-encoded")
                tree[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                tree = {p: c for p, c in tree.items() if not p.startswith(folder)}
            else:
                raise HubError(400, f"the fake Hub does not accept {key!r} operations (it never asks for LFS)")
        message = header.get("summary") or ""
        if not message:
            raise HubError(400, "empty commit message")
        pull_request_url = None
        branch = revision
        if create_pr:
            pull_request = self._open_pull_request(repo, revision, message, header.get("description", ""))
            branch = f"refs/pr/{pull_request.num}"
            pull_request_url = f"{self._base_url()}/{repo_id}/discussions/{pull_request.num}"
        sha = repo.add_commit(branch, tree, message)
        reply = {"commitUrl": f"{self._base_url()}/{repo_id}/commit/{sha}", "commitOid": sha, "success": True}
        if pull_request_url:
            reply["pullRequestUrl"] = pull_request_url
        return 200, reply, {}

    def _validate_yaml(self) -> tuple[int, Any, dict[str, str]]:
        content = str(self._json_body().get("content", ""))
        errors = validate_card_metadata(content)
        if errors:
            return 400, {"errors": [{"message": e} for e in errors], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}


def validate_card_metadata(readme: str) -> list[str]:
    """Problems in a README's YAML front matter, as the Hub reports them (empty when valid)."""
    if not readme.startswith("---\n"):
        return []
    end = readme.find("\n---", 4)
    if end < 0:
        return ["front matter is not closed by '---'"]
    try:
        metadata = yaml.safe_load(readme[4:end])
    except yaml.YAMLError as error:
        return [f"invalid YAML: {error}"]
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["metadata must be a YAML mapping"]
    errors: list[str] = []
    base_model = metadata.get("base_model")
    if base_model is not None and not (
        isinstance(base_model, str) or (isinstance(base_model, list) and all(isinstance(b, str) for b in base_model))
    ):
        errors.append('"base_model" must be a string or a list of strings')
    tags = metadata.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        errors.append('"tags" must be a list of strings')
    model_index = metadata.get("model-index")
    if model_index is not None:
        if not isinstance(model_index, list):
            return errors + ['"model-index" must be a list']
        for entry in model_index:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                errors.append('"model-index[]" needs a "name"')
                continue
            for result in entry.get("results", []):
                task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
                if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                    errors.append('"model-index[].results[].task.type" is required')
                if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("name", "type")):
                    errors.append('"model-index[].results[].dataset" needs "name" and "type"')
                if not isinstance(metrics, list) or not metrics:
                    errors.append('"model-index[].results[].metrics" must be a non-empty list')
                    continue
                for metric in metrics:
                    if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or "value" not in metric:
                        errors.append('"model-index[].results[].metrics[]" needs "type" and "value"')
    return errors

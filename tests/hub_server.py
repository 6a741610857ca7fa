"""A small Hugging Face Hub-compatible HTTP server for the registry tests (stdlib only, 127.0.0.1).

Checked against huggingface_hub 2.4.0 (httpx2 client), by reading the client's source
(``hf_api.py``, ``_commit_api.py``, ``file_download.py``, ``_snapshot_download.py``,
``utils/_http.py``). It implements exactly the endpoints that ``create_repo``, ``repo_info``,
``create_branch``, ``delete_branch``, ``list_repo_files``, ``create_commit``, ``snapshot_download``,
``hf_hub_download`` and ``list_models`` call:

====== ================================================ ==========================================
POST   /api/repos/create                                create_repo (409 if it exists)
POST   /api/validate-yaml                               create_commit, when README.md is added
POST   /api/models/{repo_id}/preupload/{revision}       create_commit: answers uploadMode "regular"
                                                        for every file, so the client sends the
                                                        bytes base64-encoded inside the commit (no
                                                        LFS, no Xet)
POST   /api/models/{repo_id}/commit/{revision}          create_commit: NDJSON lines ``header``,
                                                        ``file`` (base64), ``deletedFile``,
                                                        ``deletedFolder``; ``lfsFile`` is refused
POST   /api/models/{repo_id}/branch/{branch}            create_branch (``startingPoint``)
POST   /api/models/{repo_id}/tag/{revision}             create_tag (``tag``; 409 if it exists)
DELETE /api/models/{repo_id}/branch/{branch}            delete_branch (not main)
GET    /api/models/{repo_id}[/revision/{revision}]      repo_info / model_info (sha, siblings)
GET    /api/models/{repo_id}/tree/{revision}[/{path}]   list_repo_tree / list_repo_files /
                                                        snapshot_download (``recursive``)
GET    /api/models/{repo_id}/refs                       list_repo_refs
GET    /api/models                                      list_models (``filter``, ``author``)
HEAD   /{repo_id}/resolve/{revision}/{path}             hf_hub_download metadata: X-Repo-Commit,
GET                                                     ETag (git blob sha1), Content-Length;
                                                        GET honours ``Range: bytes=N-``
GET    /api/agent-harnesses                             huggingface_hub telemetry: empty registry
====== ================================================ ==========================================

Errors carry the headers ``hf_raise_for_status`` maps to typed exceptions: ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) and ``X-Error-Message``
(``Invalid credentials in Authorization header`` for an unknown token). Authentication: tokens map
to users, a user may write to their own namespace and their organizations; anonymous requests may
only read public, non-gated repositories (401 with ``RepoNotFound`` otherwise, as the Hub does).

Fault injection: ``abort_next_commits = n`` drops the connection halfway through reading the next
``n`` commit bodies without applying them; ``die_on_commit = True`` also stops the whole server
(``restart()`` brings it back on the same port with the same repositories). A commit whose body
ends before its ``Content-Length`` (or last chunk), e.g. because the client was killed, is never
applied either (``incomplete_commits`` counts them). For downloads (``GET .../resolve/...``):
``drip_seconds = s`` sends a file's body one byte every ``s`` seconds; ``short_bodies = "cut"``
announces a file's full ``Content-Length`` but sends half of it and closes the connection, and
``short_bodies = "length"`` announces (and sends) half the file, so the answer looks complete.
``proxy_page = True`` answers every request with ``200 OK`` and an HTML login page, as a
captive portal or a company proxy does.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["HubServer", "HubState", "Repo", "Commit", "HF_HUB_VERSION_CHECKED", "PROXY_PAGE"]

HF_HUB_VERSION_CHECKED = "2.4.0"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


PROXY_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><form action=/login>Please sign in to continue.</form></body></html>\n"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def blob_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a file's oid and a regular file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    summary: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    gated: bool = False
    gated_allowed: set[str] = field(default_factory=set)
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=_now)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        return self.commits.get(oid) if oid else None


@dataclass
class HubState:
    """Everything the server holds; it survives ``HubServer.restart()``."""

    tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    orgs: dict[str, set[str]] = field(default_factory=dict)  # user -> organizations
    repos: dict[str, Repo] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) log
    commit_ops: list[list[str]] = field(default_factory=list)  # the NDJSON keys of each applied commit
    counter: int = 0

    def namespaces(self, user: str | None) -> set[str]:
        return set() if user is None else {user, *self.orgs.get(user, set())}

    def commit(self, repo: Repo, branch: str, files: dict[str, bytes], summary: str) -> Commit:
        with self.lock:
            self.counter += 1
            parent = repo.branches.get(branch)
            oid = hashlib.sha1(f"{repo.repo_id}\0{parent}\0{summary}\0{self.counter}\0{sorted(files)}".encode()).hexdigest()
            c = Commit(oid, parent, dict(files), summary, _now())
            repo.commits[oid] = c
            repo.branches[branch] = oid
            return c


class _Reply(Exception):
    """Raised inside a handler to answer with an error status and the Hub's error headers."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid the 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    # --- plumbing -------------------------------------------------------------------------

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    @property
    def state(self) -> HubState:
        return self.server.hub.state

    def _body(self) -> bytes:
        """The request body, read once (an error reply must still consume it, or keep-alive breaks).

        ``self._complete`` is False when the client went away before sending all of it.
        """
        if self._raw is None:
            self._raw, self._complete = b"", True
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    line = self.rfile.readline()
                    size = int(line.split(b";")[0].strip() or b"0", 16) if line else -1
                    if size <= 0:
                        self._complete = size == 0 and bool(self.rfile.readline())
                        break
                    chunk = self.rfile.read(size)
                    self._raw += chunk
                    if len(chunk) < size or not self.rfile.readline():
                        self._complete = False
                        break
            else:
                want = int(self.headers.get("Content-Length") or 0)
                self._raw = self.rfile.read(want)
                self._complete = len(self._raw) == want
        return self._raw

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        user = self.state.tokens.get(token)
        if user is None:
            raise _Reply(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_id: str, user: str | None, *, write: bool = False) -> Repo:
        repo = self.state.repos.get(repo_id)
        owner = repo_id.split("/")[0]
        may_write = owner in self.state.namespaces(user)
        if repo is None or (repo.private and not may_write):
            raise _Reply(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write:
            if user is None:
                raise _Reply(401, "You must be authenticated to write to this repository")
            if not may_write:
                raise _Reply(403, f"You don't have the rights to write to {repo_id}")
        elif repo.gated and not may_write and user not in repo.gated_allowed:
            raise _Reply(
                401 if user is None else 403,
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to access it.",
                "GatedRepo",
            )
        return repo

    @staticmethod
    def _commit(repo: Repo, rev: str) -> Commit:
        c = repo.resolve(rev)
        if c is None:
            raise _Reply(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return c

    def _dispatch(self) -> None:
        self._raw: bytes | None = None
        self._complete = True
        if self.hub.proxy_page:
            self._body()
            return self._send(200, PROXY_PAGE, ctype="text/html; charset=utf-8")
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        with self.state.lock:
            self.state.requests.append((self.command, url.path))
        try:
            if parts[:2] == ["api", "agent-harnesses"]:
                return self._json({"standardEnvVars": [], "harnesses": {}})
            user = self._user()
            if self.command == "POST" and parts[:3] == ["api", "repos", "create"]:
                return self._create_repo(user)
            if self.command == "POST" and parts[:2] == ["api", "validate-yaml"]:
                return self._validate_yaml()
            if parts[:2] == ["api", "models"] and len(parts) == 2 and self.command == "GET":
                return self._list_models(user, query)
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
                return self._model_api(user, repo_id, rest, query)
            if len(parts) >= 5 and parts[2] == "resolve" and self.command in ("GET", "HEAD"):
                return self._resolve(user, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            raise _Reply(404, f"no route for {self.command} {url.path}")
        except _Reply as r:
            self._body()
            headers = {"X-Error-Message": r.message, **getattr(r, "headers", {})}
            if r.code:
                headers["X-Error-Code"] = r.code
            self._json({"error": r.message}, r.status, headers)
        except (KeyError, ValueError, TypeError) as exc:  # a malformed request: say so, like the Hub's 400s
            self._body()
            self._json({"error": f"bad request: {exc!r}"}, 400, {"X-Error-Message": f"bad request: {exc!r}"})

    do_GET = do_POST = do_HEAD = do_DELETE = _dispatch

    # --- endpoints ------------------------------------------------------------------------

    def _create_repo(self, user: str | None) -> None:
        payload = json.loads(self._body() or b"{}")
        if user is None:
            raise _Reply(401, "You must be authenticated to create a repository")
        if payload.get("type", "model") != "model":
            raise _Reply(400, "this test server only hosts model repositories")
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        if namespace not in self.state.namespaces(user):
            raise _Reply(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        with self.state.lock:
            if repo_id in self.state.repos:
                return self._json({"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"}, 409)
            repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
            self.state.repos[repo_id] = repo
            self.state.commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        content = json.loads(self._body() or b"{}").get("content", "")
        if content.startswith("---") and "\n---" not in content[3:]:
            return self._json({"errors": [{"message": "unterminated YAML front matter"}], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})

    def _list_models(self, user: str | None, query: dict[str, list[str]]) -> None:
        wanted, author = query.get("filter", []), (query.get("author") or [None])[0]
        out = []
        with self.state.lock:
            repos = list(self.state.repos.values())
        for repo in repos:
            if repo.private and repo.repo_id.split("/")[0] not in self.state.namespaces(user):
                continue
            if author and repo.repo_id.split("/")[0] != author:
                continue
            head = repo.resolve("main")
            card = head.files.get("README.md", b"").decode("utf-8", "replace") if head else ""
            tags = _card_tags(card)
            if any(f not in tags for f in wanted):
                continue
            out.append({"_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id, "private": repo.private,
                        "sha": head.oid if head else None, "lastModified": head.date if head else repo.created, "tags": tags})
        self._json(out)

    def _model_api(self, user: str | None, repo_id: str, rest: list[str], query: dict[str, list[str]]) -> None:
        if self.command == "POST" and rest[:1] == ["preupload"]:
            self._repo(repo_id, user, write=True)
            files = json.loads(self._body())["files"]
            return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if self.command == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
            return self._commit_endpoint(user, repo_id, rest[1], query)
        if self.command == "POST" and rest[:1] == ["branch"] and len(rest) == 2:
            repo = self._repo(repo_id, user, write=True)
            payload = json.loads(self._body() or b"{}")
            with self.state.lock:
                if rest[1] in repo.branches:
                    raise _Reply(409, f"Reference {rest[1]} already exists")
                start = self._commit(repo, payload.get("startingPoint") or "main")
                repo.branches[rest[1]] = start.oid
            return self._json({})
        if self.command == "POST" and rest[:1] == ["tag"] and len(rest) == 2:
            repo = self._repo(repo_id, user, write=True)
            payload = json.loads(self._body() or b"{}")
            with self.state.lock:
                target = self._commit(repo, rest[1])
                if payload.get("tag") in repo.tags:
                    raise _Reply(409, f"Tag {payload.get('tag')} already exists")
                repo.tags[payload["tag"]] = target.oid
            return self._json({})
        if self.command == "DELETE" and rest[:1] == ["branch"] and len(rest) == 2:
            repo = self._repo(repo_id, user, write=True)
            with self.state.lock:
                if rest[1] == "main":
                    raise _Reply(403, "You cannot delete the default branch")
                if rest[1] not in repo.branches:
                    raise _Reply(404, f"Invalid rev id: {rest[1]}", "RevisionNotFound")
                del repo.branches[rest[1]]
            return self._json({})
        if self.command != "GET":
            raise _Reply(404, f"no route for {self.command} /api/models/{repo_id}/{'/'.join(rest)}")
        repo = self._repo(repo_id, user)
        if rest == [] or (rest[:1] == ["revision"] and len(rest) == 2):
            c = self._commit(repo, rest[1] if rest else "main")
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = [{"rfilename": p, **({"size": len(d), "blobId": blob_oid(d)} if blobs else {})} for p, d in sorted(c.files.items())]
            return self._json({"_id": repo_id, "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
                               "sha": c.oid, "private": repo.private, "gated": "manual" if repo.gated else False,
                               "disabled": False, "lastModified": c.date, "createdAt": repo.created,
                               "tags": _card_tags(c.files.get("README.md", b"").decode("utf-8", "replace")),
                               "siblings": siblings})
        if rest[:1] == ["tree"] and len(rest) >= 2:
            c = self._commit(repo, rest[1])
            prefix = "/".join(rest[2:]).strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            return self._json(_tree(c.files, prefix, recursive))
        if rest == ["refs"]:
            def ref(kind: str, name: str, oid: str) -> dict[str, str]:
                return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

            return self._json({"branches": [ref("heads", n, o) for n, o in repo.branches.items()],
                               "tags": [ref("tags", n, o) for n, o in repo.tags.items()], "converts": []})
        raise _Reply(404, f"no route for GET /api/models/{repo_id}/{'/'.join(rest)}")

    def _commit_endpoint(self, user: str | None, repo_id: str, branch: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, user, write=True)
        if query.get("create_pr", ["0"])[0] == "1":
            raise _Reply(400, "pull requests are not supported by this test server")
        if branch not in repo.branches:
            raise _Reply(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        if self.hub.abort_next_commits > 0 or self.hub.die_on_commit:
            return self._abort_midway()
        body = self._body()
        if not self._complete:  # the client died or the connection broke mid-body: apply nothing, as the Hub
            with self.state.lock:
                self.hub.incomplete_commits += 1
            self.close_connection = True
            return None
        lines = [json.loads(ln) for ln in body.splitlines() if ln.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _Reply(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        with self.state.lock:
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise _Reply(412, f"A commit has happened since {parent}; the head of {branch} is {head.oid}")
            files = dict(head.files)
            for op in lines[1:]:
                key, value = op.get("key"), op.get("value", {})
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _Reply(400, "file content must be base64")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise _Reply(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    root = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(root)}
                elif key == "lfsFile":
                    raise _Reply(400, "this test server answered uploadMode 'regular'; LFS files are not accepted")
                else:
                    raise _Reply(400, f"unknown commit operation {key!r}")
            c = self.state.commit(repo, branch, files, header.get("summary", ""))
            self.state.commit_ops.append([op.get("key") for op in lines[1:]])
        self._json({"success": True, "commitOid": c.oid, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{c.oid}",
                    "pullRequestUrl": None, "commitMessage": c.summary})

    def _abort_midway(self) -> None:
        """Read half of the commit body, then drop the connection (and maybe the server): nothing is applied."""
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(max(1, length // 2))
        self._raw = b""  # the rest is never read: the connection is dropped
        with self.state.lock:
            if self.hub.abort_next_commits > 0:
                self.hub.abort_next_commits -= 1
            die = self.hub.die_on_commit
            self.hub.die_on_commit = False
            self.hub.aborted_commits += 1
        self.close_connection = True
        if die:  # stop listening first, so that the client's error means the server is gone
            self.hub.stop()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _resolve(self, user: str | None, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id, user)
        c = self._commit(repo, rev)
        headers = {"X-Repo-Commit": c.oid}
        data = c.files.get(path)
        if data is None:
            raise _ReplyWith(404, "Entry not found", "EntryNotFound", headers)
        headers |= {"ETag": f'"{blob_oid(data)}"', "Accept-Ranges": "bytes"}
        start = 0
        rng = self.headers.get("Range", "")
        if self.command == "GET" and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if self.command == "GET" and (self.hub.drip_seconds or self.hub.short_bodies):
            return self._send_faulty(206 if start else 200, data[start:], headers)
        self._send(206 if start else 200, data[start:], headers, "application/octet-stream")

    def _send_faulty(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """The announced body, dripped a byte at a time, or cut in half and the connection closed."""
        import time

        if self.hub.short_bodies == "length":
            body = body[: len(body) // 2]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.close_connection = True
        try:
            if self.hub.short_bodies == "length":
                self.wfile.write(body)
                return
            if self.hub.short_bodies == "cut":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(self.hub.drip_seconds)
        except OSError:  # the client gave up
            pass


class _ReplyWith(_Reply):
    """An error reply that also carries extra headers (e.g. X-Repo-Commit on EntryNotFound)."""

    def __init__(self, status: int, message: str, code: str | None, headers: dict[str, str]) -> None:
        super().__init__(status, message, code)
        self.headers = headers


def _card_tags(card: str) -> list[str]:
    """The ``tags:`` list and ``library_name`` of a card's YAML front matter (simple line parsing)."""
    if not card.startswith("---"):
        return []
    front = card[3:].split("\n---", 1)[0].splitlines()
    tags, in_tags = [], False
    for line in front:
        if line.startswith("library_name:"):
            tags.append(line.split(":", 1)[1].strip().strip('"'))
        in_tags = line.startswith("tags:") or (in_tags and line.startswith("- "))
        if in_tags and line.startswith("- "):
            tags.append(line[2:].strip().strip('"'))
    return tags


def _tree(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen_dirs: set[str] = set()
    base = f"{prefix}/" if prefix else ""
    for path, data in sorted(files.items()):
        if not path.startswith(base):
            continue
        rel = path[len(base):]
        parts = rel.split("/")
        for i in range(1, len(parts)):
            d = base + "/".join(parts[:i])
            if d not in seen_dirs and (recursive or i == 1):
                seen_dirs.add(d)
                out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
        if recursive or len(parts) == 1:
            out.append({"type": "file", "oid": blob_oid(data), "size": len(data), "path": path})
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    hub: HubServer

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (it gave up on a dripping or proxied answer) is no error of the server's; print the rest."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Cut every open (keep-alive) connection, as a dying server would."""
        with self.conn_lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HubServer:
    """A running server: ``url`` is the value for ``HF_ENDPOINT``; ``state`` holds users and repositories.

    Example:
        >>> hub = HubServer(tokens={"tok": "alice"}).start()
        >>> hub.url  # 'http://127.0.0.1:PORT'
        >>> hub.stop()
    """

    def __init__(self, *, tokens: dict[str, str] | None = None, orgs: dict[str, set[str]] | None = None) -> None:
        self.state = HubState(tokens=dict(tokens or {}), orgs={k: set(v) for k, v in (orgs or {}).items()})
        self.abort_next_commits = 0
        self.die_on_commit = False
        self.drip_seconds = 0.0
        self.short_bodies: str | None = None
        self.proxy_page = False
        self.aborted_commits = 0
        self.incomplete_commits = 0  # commit bodies that ended early (client gone): never applied
        self.port = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> HubServer:
        """Listen on 127.0.0.1 (an ephemeral port the first time, the same port on a restart)."""
        httpd = _Server(("127.0.0.1", self.port), _Handler)
        httpd.hub = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections; the state is kept for ``restart()``."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            httpd.drop_connections()

    def restart(self) -> HubServer:
        self.stop()
        return self.start()

    # --- test helpers ---------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, *, private: bool = False,
                 gated: bool = False, gated_allowed: set[str] | None = None) -> Repo:
        """Create a repository directly (initial commit with .gitattributes, then ``files`` if given)."""
        with self.state.lock:
            repo = Repo(repo_id, private=private, gated=gated, gated_allowed=set(gated_allowed or ()))
            self.state.repos[repo_id] = repo
            self.state.commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit")
            if files:
                self.state.commit(repo, "main", {".gitattributes": GITATTRIBUTES, **files}, "add files")
        return repo

    def file_url(self, repo_id: str, rev: str, path: str) -> str:
        return f"{self.url}/{repo_id}/resolve/{quote(rev, safe='')}/{quote(path)}"

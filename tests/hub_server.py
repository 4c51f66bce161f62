"""A small in-memory imitation of the Hugging Face Hub, for tests that push and pull over HTTP.

Why: publishing a release (``train/push_release.py``) and loading artifacts back by repo id go
through ``huggingface_hub``'s real HTTP client. Mocking that client would test our assumptions
about it; serving the few endpoints it actually calls, on 127.0.0.1, tests the real thing without
a network or an account.

    with LocalHub() as hub:          # FastAPI app served by uvicorn in a background thread
        os.environ["HF_ENDPOINT"] = hub.endpoint
        ...
        hub.files("user/name")       # {path: bytes} at the head of main

What it serves (the routes ``huggingface_hub`` 2.x uses for create_repo, upload_folder,
hf_hub_download and snapshot_download):

    POST /api/repos/create
    POST /api/validate-yaml                            upload_folder checks README.md's front matter
    POST /api/{kind}/{ns}/{name}/branch/{branch}
    POST /api/{kind}/{ns}/{name}/preupload/{rev}
    POST /api/{kind}/{ns}/{name}/commit/{rev}          NDJSON: header, file / deletedFile / deletedFolder
    GET  /api/{kind}/{ns}/{name}[/revision/{rev}]      repo info with sha and siblings
    GET  /api/{kind}/{ns}/{name}/tree/{rev}[/{path}]   (?recursive=true)
    GET|HEAD /[{kind}/]{ns}/{name}/resolve/{rev}/{path}

``kind`` is "models", "datasets" or "spaces". Every file is answered "regular" by preupload, so
contents arrive base64-encoded inside the commit: no LFS or Xet storage to imitate. Each commit is
a full snapshot {path: bytes} under a fresh random 40-hex sha; branches point at shas, and any
revision may be a branch name or a full sha. Errors carry the ``X-Error-Code`` header
(RepoNotFound, RevisionNotFound, EntryNotFound) that the client turns into its typed exceptions.
Any bearer token is accepted; nothing is checked beyond that. Other routes answer 404, which the
client tolerates where it matters (e.g. its once-a-day GET /api/agent-harnesses).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
from dataclasses import dataclass, field

import uvicorn
import yaml
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """One repository: every commit's full snapshot, and the branches pointing into them."""

    repo_type: str
    repo_id: str
    private: bool
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    branches: dict[str, str] = field(default_factory=dict)  # branch -> sha
    messages: dict[str, str] = field(default_factory=dict)  # sha -> commit summary

    def commit(self, branch: str, files: dict[str, bytes], message: str) -> str:
        sha = secrets.token_hex(20)
        self.snapshots[sha], self.branches[branch], self.messages[sha] = files, sha, message
        return sha

    def resolve(self, revision: str) -> str | None:
        """The commit sha a branch name or full sha refers to (None when unknown)."""
        return self.branches.get(revision) or (revision if revision in self.snapshots else None)


class HubError(Exception):
    """Raised inside a handler; becomes a JSON error response with the Hub's X-Error-Code."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.commit = status, code, commit


class LocalHub:
    """The Hub imitation: ``repos`` in memory, served on a free 127.0.0.1 port while entered."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.Lock()  # handlers may run concurrently with test code reading repos
        self.app = self._build_app()
        self.endpoint = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # --- what tests use ---------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (KeyError if the repo does not exist)."""
        repo = self.repos[(repo_type, repo_id)]
        return dict(repo.snapshots[repo.resolve(revision)])

    def __enter__(self) -> LocalHub:
        # Bind the socket ourselves (port 0 = any free port) so there is no race to find a port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", ws="none", http="h11")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._socket = sock
        self._thread.start()
        while not self._server.started:  # uvicorn sets this once it accepts connections
            if not self._thread.is_alive():
                raise RuntimeError("the local Hub server failed to start")
            self._thread.join(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None and self._socket is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        if self._thread.is_alive():
            raise RuntimeError("the local Hub server thread did not stop")

    # --- helpers ----------------------------------------------------------------------------
    def _repo(self, kind: str, ns: str, name: str) -> Repo:
        repo = self.repos.get((KINDS.get(kind, ""), f"{ns}/{name}"))
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository {ns}/{name} not found")
        return repo

    @staticmethod
    def _snapshot(repo: Repo, revision: str) -> tuple[str, dict[str, bytes]]:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha, repo.snapshots[sha]

    # --- the app ----------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        hub = self

        @app.exception_handler(HubError)
        async def hub_error(request: Request, err: HubError) -> JSONResponse:
            headers = {"X-Error-Message": str(err).encode("ascii", "replace").decode()}  # headers are latin-1
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:  # lets the client cache "this file does not exist at this commit"
                headers["X-Repo-Commit"] = err.commit
            return JSONResponse({"error": str(err)}, status_code=err.status, headers=headers)

        @app.post("/api/repos/create")
        async def create_repo(request: Request) -> JSONResponse:
            body = await request.json()
            repo_type = body.get("type") or "model"
            repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{str(request.base_url).rstrip('/')}/{prefix}{repo_id}"
            with hub.lock:
                if (repo_type, repo_id) in hub.repos:  # create_repo(exist_ok=True) reads "url" from a 409 too
                    return JSONResponse({"error": "You already created this model repo", "url": url}, status_code=409)
                repo = Repo(repo_type, repo_id, private=body.get("visibility") == "private")
                repo.commit("main", {}, "initial commit")  # the Hub also starts every repo with a commit
                hub.repos[(repo_type, repo_id)] = repo
            return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

        @app.post("/api/validate-yaml")
        async def validate_yaml(request: Request) -> JSONResponse:
            # upload_folder posts README.md here before uploading; parse its front matter like the Hub.
            content = (await request.json())["content"]
            head, sep, _ = content.removeprefix("---\n").partition("\n---")
            if not (content.startswith("---\n") and sep):
                warning = {"message": "empty or missing yaml metadata in repo card"}
                return JSONResponse({"errors": [], "warnings": [warning]})
            try:
                metadata = yaml.safe_load(head)
                error = None if isinstance(metadata, dict) else "YAML metadata must be a mapping"
            except yaml.YAMLError as err:
                error = f"invalid YAML: {err}"
            if error:
                return JSONResponse({"errors": [{"message": error}], "warnings": []}, status_code=400)
            return JSONResponse({"errors": [], "warnings": []})

        @app.post("/api/{kind}/{ns}/{name}/branch/{branch}")
        async def create_branch(kind: str, ns: str, name: str, branch: str, request: Request) -> JSONResponse:
            body = json.loads(await request.body() or b"{}")
            with hub.lock:
                repo = hub._repo(kind, ns, name)
                if branch in repo.branches:
                    raise HubError(409, None, f"Reference already exists: {branch}")
                repo.branches[branch], _ = hub._snapshot(repo, body.get("startingPoint") or "main")
            return JSONResponse({})

        @app.post("/api/{kind}/{ns}/{name}/preupload/{revision}")
        async def preupload(kind: str, ns: str, name: str, revision: str, request: Request) -> JSONResponse:
            body = await request.json()
            with hub.lock:
                _, files = hub._snapshot(hub._repo(kind, ns, name), revision)
            return JSONResponse({"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
                for f in body["files"]
            ]})

        @app.post("/api/{kind}/{ns}/{name}/commit/{revision}")
        async def commit(kind: str, ns: str, name: str, revision: str, request: Request) -> JSONResponse:
            lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
            with hub.lock:
                repo = hub._repo(kind, ns, name)
                head, files = hub._snapshot(repo, revision)
                if revision not in repo.branches:
                    raise HubError(400, None, f"Can only commit to a branch, not {revision}")
                files, header = dict(files), {}
                for line in lines:
                    key, value = line["key"], line["value"]
                    if key == "header":
                        header = value
                    elif key == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        prefix = value["path"].rstrip("/") + "/"
                        files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                    else:  # lfsFile / copies: preupload never asks for them
                        raise HubError(400, None, f"unsupported commit operation {key!r}")
                parent = header.get("parentCommit")
                if parent and parent != head:
                    raise HubError(412, None, f"parent commit {parent} is not the head of {revision}")
                sha = repo.commit(revision, files, header.get("summary", ""))
            prefix = "" if repo.repo_type == "model" else f"{kind}/"
            url = f"{str(request.base_url).rstrip('/')}/{prefix}{repo.repo_id}/commit/{sha}"
            return JSONResponse({"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None})

        @app.get("/api/{kind}/{ns}/{name}")
        @app.get("/api/{kind}/{ns}/{name}/revision/{revision}")
        async def repo_info(kind: str, ns: str, name: str, revision: str = "main") -> JSONResponse:
            with hub.lock:
                repo = hub._repo(kind, ns, name)
                sha, files = hub._snapshot(repo, revision)
            return JSONResponse({
                "id": repo.repo_id, "sha": sha, "private": repo.private,
                "siblings": [{"rfilename": path, "size": len(data)} for path, data in sorted(files.items())],
            })

        @app.get("/api/{kind}/{ns}/{name}/tree/{revision}")
        @app.get("/api/{kind}/{ns}/{name}/tree/{revision}/{path:path}")
        async def tree(kind: str, ns: str, name: str, revision: str, request: Request, path: str = "") -> JSONResponse:
            recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
            with hub.lock:
                sha, files = hub._snapshot(hub._repo(kind, ns, name), revision)
            prefix = path.strip("/") + "/" if path.strip("/") else ""
            below = {p[len(prefix):]: data for p, data in files.items() if p.startswith(prefix)}
            if prefix and not below:
                raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision}", commit=sha)
            entries: dict[str, dict] = {}
            for rel, data in below.items():
                parts = rel.split("/")
                for depth in range(1, len(parts)):  # the folders on the way to this file
                    folder = "/".join(parts[:depth])
                    if depth == 1 or recursive:
                        entries.setdefault(folder, {"type": "directory", "path": prefix + folder,
                                                    "oid": git_blob_sha(folder.encode())})
                if len(parts) == 1 or recursive:
                    entries[rel] = {"type": "file", "path": prefix + rel, "size": len(data), "oid": git_blob_sha(data)}
            return JSONResponse([entries[key] for key in sorted(entries)])

        @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
        @app.api_route("/{kind}/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
        async def resolve(
            ns: str, name: str, revision: str, path: str, request: Request, kind: str = "models"
        ) -> Response:
            with hub.lock:
                sha, files = hub._snapshot(hub._repo(kind, ns, name), revision)
            if path not in files:
                raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision}", commit=sha)
            data = files[path]
            # hf_hub_download needs the commit (X-Repo-Commit), a cache key (ETag) and the size.
            headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"', "Content-Length": str(len(data))}
            return Response(b"" if request.method == "HEAD" else data, headers=headers,
                            media_type="application/octet-stream")

        return app

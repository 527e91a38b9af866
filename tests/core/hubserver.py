"""A local stand-in for the Hugging Face Hub, and the small GGUFs it serves.

:class:`HubServer` (stdlib ``http.server`` in a thread on 127.0.0.1, port 0) answers what
``huggingface_hub`` asks: ``/api/models/{repo}[/revision/{rev}]`` (model info with the commit
sha), ``/api/models/{repo}/tree/{rev}`` (files: size, git oid, LFS sha256),
``/api/models/{repo}/paths-info/{rev}``, and ``/{repo}/resolve/{rev}/{path}`` (HEAD and GET
with ETag, X-Repo-Commit, X-Linked-Size/Etag, Accept-Ranges and Range). Knobs make it slow
(``bytes_per_s``), forgetful of Range (``ignore_range``), lying (``corrupt``), flaky
(``drop_after``: the next body breaks off after that many bytes), redirecting to a "CDN" on
another host name (``redirect``) or strict about tokens (``token``). Every request is logged.

Point ``HF_ENDPOINT`` at ``server.url``. :func:`write_gguf` makes llama-architecture GGUFs
with the ``gguf`` package (split shards with ``split_max_tensors``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


def write_gguf(
    path: Path,
    n_embd: int = 64,
    n_layer: int = 2,
    n_ff: int = 128,
    seed: int = 0,
    split_max_tensors: int = 0,
    chat_template: str | None = None,
) -> list[Path]:
    """A random-weight llama GGUF (F32); the shard paths when split, else ``[path]``."""
    from tests.gguf_factory import shards, write_tiny_llama

    write_tiny_llama(
        path, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, chat_template=chat_template, seed=seed,
        name=f"store-test-{seed}", split_max_tensors=split_max_tensors,
    )  # fmt: skip
    return shards(path) if split_max_tensors else [path]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    lfs: set[str] = field(default_factory=set)
    refs: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


class HubServer:
    """The fake Hub. Use as a context manager; ``url`` is its endpoint."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.log: list[Request] = []
        self.bytes_per_s: float = 0.0
        self.ignore_range = False
        self.corrupt: set[str] = set()
        self.drop_after: int | None = None
        self.redirect = False
        self.token: str | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], lfs: bool = True) -> str:
        """Publish ``files`` as the ``main`` branch of ``repo_id``; the new commit sha."""
        data = {p: v.read_bytes() if isinstance(v, Path) else v for p, v in files.items()}
        commit = hashlib.sha1(
            json.dumps(sorted((p, sha256_hex(b)) for p, b in data.items())).encode()
        ).hexdigest()
        names = set(data) if lfs else set()
        self.repos[repo_id] = Repo(data, commit, names, {"main": commit})
        return commit

    def requests(self, method: str | None = None, contains: str = "") -> list[Request]:
        with self._lock:
            return [
                r for r in self.log if (method is None or r.method == method) and contains in r.path
            ]

    def record(self, req: Request) -> None:
        with self._lock:
            self.log.append(req)


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            path = urlsplit(self.path).path
            hub.record(Request(method, path, {k.lower(): v for k, v in self.headers.items()}))
            try:
                self._route(method, path)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _route(self, method: str, path: str) -> None:
            if path.startswith("/cdn/"):
                return self._serve_cdn(method, path)
            if path.startswith("/api/") and not self._authorized():
                return self._error(401, "Unauthorized")
            m = re.match(r"^/api/models/([^/]+/[^/]+)/(tree|paths-info)/([^/]+)(?:/(.*))?$", path)
            if m:
                return self._listing(m.group(1), unquote(m.group(3)), m.group(2))
            m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
            if m:
                return self._model_info(m.group(1), unquote(m.group(2) or "main"))
            m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
            if m:
                return self._resolve(method, m.group(1), unquote(m.group(2)), unquote(m.group(3)))
            return self._error(404, "Not Found")

        def _authorized(self) -> bool:
            return hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _repo(self, repo_id: str, revision: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "Repository not found", "RepoNotFound")
                return None
            if revision not in (repo.commit, *repo.refs):
                self._error(404, "Invalid rev id", "RevisionNotFound")
                return None
            return repo

        def _model_info(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            body = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)]}  # fmt: skip
            self._json(body)

        def _listing(self, repo_id: str, revision: str, kind: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            if kind == "paths-info":
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                wanted = set(json.loads(raw).get("paths", [])) if raw.startswith("{") else set()
                paths = [p for p in sorted(repo.files) if p in wanted]
            else:
                paths = sorted(repo.files)
            self._json([self._entry(repo, p) for p in paths])

        @staticmethod
        def _entry(repo: Repo, path: str) -> dict[str, Any]:
            data = repo.files[path]
            entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data),
                                     "oid": git_oid(data)}  # fmt: skip
            if path in repo.lfs:
                entry["lfs"] = {"oid": sha256_hex(data), "size": len(data), "pointerSize": 134}
            return entry

        def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            data = repo.files.get(path)
            if data is None:
                return self._error(404, "Entry not found", "EntryNotFound")
            etag = f'"{sha256_hex(data)}"' if path in repo.lfs else f'"{git_oid(data)}"'
            common = {"X-Repo-Commit": repo.commit, "X-Linked-Etag": etag,
                      "X-Linked-Size": str(len(data))}  # fmt: skip
            if hub.redirect and path in repo.lfs:
                location = f"http://localhost:{hub.port}/cdn/{repo_id}/{sha256_hex(data)}"
                self.send_response(302)
                for k, v in common.items():
                    self.send_header(k, v)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send_bytes(method, self._served(path, data), etag, common)

        def _serve_cdn(self, method: str, path: str) -> None:
            _, _, owner, name, sha = path.split("/", 4)
            repo = hub.repos.get(f"{owner}/{name}")
            for p, data in (repo.files if repo else {}).items():
                if sha256_hex(data) == sha:
                    return self._send_bytes(method, self._served(p, data), f'"{sha}"', {})
            return self._error(404, "Not Found")

        @staticmethod
        def _served(path: str, data: bytes) -> bytes:
            if path not in hub.corrupt:
                return data
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0xFF
            return bytes(flipped)

        def _send_bytes(self, method: str, data: bytes, etag: str, extra: dict[str, str]) -> None:
            start = 0
            m = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
            if m and not hub.ignore_range and int(m.group(1)) < len(data):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else len(data) - 1
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                body = data[start : end + 1]
            else:
                self.send_response(200)
                body = data
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method == "HEAD":
                return
            self._write_body(body)

        def _write_body(self, body: bytes) -> None:
            chunk = 16 << 10
            sent = 0
            drop_after, hub.drop_after = hub.drop_after, None  # one connection only
            for i in range(0, len(body), chunk):
                if drop_after is not None and sent >= drop_after:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                piece = body[i : i + chunk]
                self.wfile.write(piece)
                sent += len(piece)
                if hub.bytes_per_s:
                    self.wfile.flush()
                    time.sleep(len(piece) / hub.bytes_per_s)

        def _json(self, obj: Any) -> None:
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, message: str, code: str | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler

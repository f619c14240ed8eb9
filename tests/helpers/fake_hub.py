"""A fake Hugging Face Hub on 127.0.0.1 for download tests.

It answers the two endpoints the downloader uses, the way huggingface.co does:
    GET /api/models/{repo}[/revision/{rev}]?blobs=true   repo info: commit sha, gated flag, files with sizes and hashes
    GET|HEAD /{repo}/resolve/{rev}/{path}                 a file, with Range support and the Hub's X-* headers
Errors carry the Hub's X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), so
huggingface_hub turns them into its typed errors exactly as it does for the real Hub.

Switches on `FakeHub.faults` inject what a home connection sees: a connection cut after N bytes of a file, a
connection that goes silent, an HTTP error for a file or for the repo listing, slow streaming, bytes damaged in
transit. `bytes_served` counts the body bytes really written to
the socket per file, so a test can prove that a resumed download fetched only the missing part.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".model", ".gguf")
_SEND_PIECE = 4096


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False

    def sibling(self, name: str) -> dict:
        data = self.files[name]
        if not name.endswith(LFS_SUFFIXES):
            return {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        return {"rfilename": name, "size": len(data), "blobId": git_blob_id(pointer),
                "lfs": {"size": len(data), "sha256": sha256, "pointerSize": len(pointer)}}

    def etag(self, name: str) -> str:
        info = self.sibling(name)
        return info["lfs"]["sha256"] if "lfs" in info else info["blobId"]


@dataclass
class Faults:
    drop_after: dict[str, int] = field(default_factory=dict)  # file -> cut the connection once this offset is sent
    stall_after: dict[str, int] = field(default_factory=dict)  # file -> go silent at this offset until the key goes
    status: dict[str, int] = field(default_factory=dict)  # file -> answer GETs of it with this HTTP status
    api_status: int | None = None  # answer the repo-info call with this HTTP status
    bytes_per_s: float | None = None  # slow streaming for every file body
    tamper: set[str] = field(default_factory=set)  # files whose bytes arrive damaged (hash mismatch)


class FakeHub:
    """A threaded HTTP server bound to 127.0.0.1 on a free port. Use as a context manager."""

    def __init__(self, repos: dict[str, FakeRepo], token: str = "hf_fake_token") -> None:
        self.repos = repos
        self.token = token
        self.faults = Faults()
        self.bytes_served: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range header)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # slow senders stop at their next piece
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def served(self, suffix: str = "") -> int:
        """Body bytes sent for files whose name ends with `suffix` (all files by default)."""
        with self._lock:
            return sum(n for name, n in self.bytes_served.items() if name.endswith(suffix))

    def requested(self, method: str = "GET") -> list[str]:
        with self._lock:
            return [path for m, path, _ in self.requests if m == method]

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self.bytes_served[name] += n

    def _log(self, method: str, path: str, range_header: str) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))


_API_RE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

        # routing ---------------------------------------------------------------------------------------------
        def _route(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub._log(self.command, path, self.headers.get("Range", ""))
            api = _API_RE.match(path)
            if api and not head:
                return self._repo_info(api["repo"], api["rev"] or "main")
            resolve = _RESOLVE_RE.match(path)
            if resolve:
                return self._file(resolve["repo"], resolve["rev"], resolve["path"], head)
            self._error(404, "EntryNotFound", "Not found")

        def _repo(self, repo_id: str, rev: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            if rev not in ("main", repo.sha):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return None
            return repo

        def _repo_info(self, repo_id: str, rev: str) -> None:
            if hub.faults.api_status:
                return self._error(hub.faults.api_status, "", "Internal Error")
            repo = self._repo(repo_id, rev)
            if repo is None:
                return
            body = json.dumps({"id": repo_id, "sha": repo.sha, "private": False,
                               "gated": "manual" if repo.gated else False,
                               "siblings": [repo.sibling(name) for name in sorted(repo.files)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, repo_id: str, rev: str, name: str, head: bool) -> None:
            repo = self._repo(repo_id, rev)
            if repo is None:
                return
            if repo.gated:
                auth = self.headers.get("Authorization", "")
                if not auth:
                    return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.")
                if auth != f"Bearer {hub.token}":
                    return self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted.")
            if name not in repo.files:
                return self._error(404, "EntryNotFound", f"{name} does not exist")
            if not head and name in hub.faults.status:
                return self._error(hub.faults.status[name], "", "Internal Error")
            data = repo.files[name]
            if name in hub.faults.tamper:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start, end = 0, len(data) - 1
            match = _RANGE_RE.match(self.headers.get("Range", ""))
            if match:
                start = int(match[1])
                end = min(int(match[2]), end) if match[2] else end
                if start >= len(data):
                    return self._error(416, "", "Range Not Satisfiable")
            self.send_response(206 if match else 200)
            etag = repo.etag(name)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Repo-Commit", repo.sha)
            self.send_header("Accept-Ranges", "bytes")
            if "lfs" in repo.sibling(name):
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(data)))
            if match:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if not head:
                self._send_body(name, data, start, end + 1)

        # body and errors ---------------------------------------------------------------------------------------
        def _send_body(self, name: str, data: bytes, start: int, stop: int) -> None:
            cut = hub.faults.drop_after.get(name)
            last = stop if cut is None else min(stop, max(cut, start))
            pos = start
            try:
                while pos < last and not hub._closing.is_set():
                    stall = hub.faults.stall_after.get(name)
                    if stall is not None and pos >= stall:
                        time.sleep(0.05)  # silent, connection open: what a stalled link looks like
                        continue
                    piece_end = min(pos + _SEND_PIECE, last, stall if stall is not None else last)
                    piece = data[pos:piece_end]
                    self.wfile.write(piece)
                    self.wfile.flush()
                    hub._count(name, len(piece))
                    pos += len(piece)
                    if hub.faults.bytes_per_s:
                        time.sleep(len(piece) / hub.faults.bytes_per_s)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (cancel): that is the point of the test
            if pos < stop:
                self.close_connection = True  # a cut connection: fewer bytes than Content-Length promised

        def _error(self, status: int, code: str, message: str) -> None:
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


# repos built from the tiny test model --------------------------------------------------------------------------------

def sharded_model_files(model_dir: Path, shards: int = 2) -> dict[str, bytes]:
    """The tiny model's files as a Hub repo would hold them: weights split in shards with a weight-map index,
    plus files a download must skip (README, .gitattributes, and a stray safetensors file the index doesn't name,
    like the unquantized shards someone once pushed next to mlx-community's 4-bit Mistral v0.2)."""
    import mlx.core as mx

    model_dir = Path(model_dir)
    weights = mx.load(str(model_dir / "model.safetensors"))
    names = sorted(weights)
    files: dict[str, bytes] = {}
    weight_map: dict[str, str] = {}
    tmp = model_dir.parent / f".{model_dir.name}-shards"
    tmp.mkdir(exist_ok=True)
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: weights[k] for k in names[i::shards]}
        mx.save_safetensors(str(tmp / shard), part, metadata={"format": "mlx"})
        files[shard] = (tmp / shard).read_bytes()
        weight_map.update({k: shard for k in part})
    total = sum(len(v) for v in files.values())
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2).encode()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        files[name] = (model_dir / name).read_bytes()
    files["README.md"] = b"---\nlicense: apache-2.0\n---\n# tiny test model\n"
    files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    files["model-stray.safetensors"] = b"not in the weight map; mlx_lm.load would choke on it"
    return files


def corrupt_header(data: bytes) -> bytes:
    """A safetensors file whose header length points past the end of the file."""
    return (10**9).to_bytes(8, "little") + data[8:]

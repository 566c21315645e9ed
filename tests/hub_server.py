"""A local stand-in for the Hugging Face Hub's file downloads, on 127.0.0.1 and a free port.

It answers the way the Hub answers huggingface_hub's `hf_hub_download` for an LFS file:

- `HEAD /{repo}/resolve/{revision}/{filename}` -> 302 to a CDN URL on another host name
  (`localhost`), with X-Repo-Commit, X-Linked-Etag (the file's SHA-256, quoted), X-Linked-Size
  and ETag; the library takes the metadata from this response and does not follow it;
- `GET` on the CDN URL -> the bytes, with Content-Length, Accept-Ranges and `Range` support
  (206 + Content-Range), which the library uses to resume a cut transfer;
- a file the repository lacks -> 404 with X-Error-Code: EntryNotFound (and X-Repo-Commit);
- `/api/agent-harnesses` (huggingface_hub's best-effort telemetry registry) -> 404.

Knobs for the tests: `altered` serves other bytes under the published digest, `cut_first_get`
closes the connection after half the bytes of a file's first GET, `stall_first_get` sends
half and then waits for `release` (a cancel test), `error_codes=False` answers a missing file
like a plain web server, and `requests` records what was asked.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class HubState:
    repo: str
    files: dict[str, bytes]
    altered: dict[str, bytes] = field(default_factory=dict)
    cut_first_get: set[str] = field(default_factory=set)
    stall_first_get: set[str] = field(default_factory=set)
    error_codes: bool = True  # False: a plain web server's 404, without X-Error-Code
    server_error: bool = False  # True: every request answered with HTTP 500
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    half_sent: threading.Event = field(default_factory=threading.Event)
    _gets: dict[str, int] = field(default_factory=dict)

    def sha256(self, filename: str) -> str:
        return hashlib.sha256(self.files[filename]).hexdigest()

    def gets(self, filename: str) -> list[Request]:
        """The GET requests of a file's bytes (CDN URLs name the file's digest)."""
        digest = self.sha256(filename)
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(f"/{digest}")]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState
    port: int

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        state = self.state
        path = unquote(urlsplit(self.path).path)
        state.requests.append(
            Request(
                self.command, path, self.headers.get("Range"), self.headers.get("Authorization")
            )
        )
        if state.server_error:
            return self._empty(500, {})
        if path.startswith("/cdn/"):
            return self._content(path[len("/cdn/") :], body)
        prefix = f"/{state.repo}/resolve/"
        if not path.startswith(prefix):
            return self._empty(404, {"X-Error-Code": "RepoNotFound"})
        revision, _, filename = path[len(prefix) :].partition("/")
        if revision not in ("main", COMMIT):
            return self._empty(404, {"X-Error-Code": "RevisionNotFound"})
        if filename not in state.files:
            codes = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}
            return self._empty(404, codes if state.error_codes else {})
        digest = state.sha256(filename)
        self._empty(
            302,
            {
                "Location": f"http://localhost:{self.port}/cdn/{digest}?download=true",
                "X-Repo-Commit": COMMIT,
                "ETag": '"0123456789abcdef0123456789abcdef01234567"',  # the LFS pointer's
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(state.files[filename])),
            },
        )

    def _content(self, digest: str, body: bool) -> None:
        state = self.state
        names = [n for n in state.files if state.sha256(n) == digest]
        if not names:
            return self._empty(404, {})
        name = names[0]
        data = state.altered.get(name, state.files[name])
        start = 0
        requested = self.headers.get("Range")
        if requested and requested.startswith("bytes="):
            start = int(requested[len("bytes=") :].split("-")[0] or 0)
        self.send_response(206 if requested else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", f'"{digest}"')
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        first = state._gets.get(name, 0) == 0
        state._gets[name] = state._gets.get(name, 0) + 1
        half = len(data) // 2
        if first and (name in state.cut_first_get or name in state.stall_first_get):
            self.wfile.write(data[start:half])
            self.wfile.flush()
            state.half_sent.set()
            if name in state.stall_first_get:
                state.release.wait(60)
            self.close_connection = True
            self.connection.close()
            return
        self.wfile.write(data[start:])

    def _empty(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


class HubServer:
    """`with HubServer(state) as hub:` serves at `hub.endpoint` until the block ends."""

    def __init__(self, state: HubState) -> None:
        self.state = state
        handler = type("Handler", (_Handler,), {"state": state})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        handler.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{handler.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.server.shutdown()
        self.server.server_close()

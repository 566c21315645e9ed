"""A PEP 503 package index on 127.0.0.1, serving a folder of wheels and sdists, for set-up tests.

pip is pointed at it with PIP_INDEX_URL (and never at PyPI): `/simple/` lists the projects,
`/simple/<name>/` links their files, `/files/<file>` serves them. Every request is recorded,
so a test can say what pip asked for (which projects a set-up installs).
"""

from __future__ import annotations

import contextlib
import html
import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def project_name(filename: str) -> str:
    """The normalized project of a distribution file (PEP 503): 'Foo_Bar-1.0-py3...' -> foo-bar."""
    stem = filename.split("-", 1)[0]
    return re.sub(r"[-_.]+", "-", stem).lower()


@dataclass
class PackageIndex:
    folder: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)

    def projects_asked(self) -> set[str]:
        """Projects whose page pip opened."""
        return {
            path.split("/")[2]
            for path in self.requests
            if path.startswith("/simple/") and path.count("/") >= 3 and path.split("/")[2]
        }

    def files_fetched(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for path in self.requests if path.startswith("/files/")]


def _handler(index: PackageIndex) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, body: bytes, kind: str = "text/html") -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            index.requests.append(self.path)
            files = sorted(p for p in index.folder.iterdir() if p.is_file())
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if parts == ["simple"]:
                names = sorted({project_name(p.name) for p in files})
                links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in names)
                self._send(f"<html><body>{links}</body></html>".encode())
            elif len(parts) == 2 and parts[0] == "simple":
                mine = [p for p in files if project_name(p.name) == parts[1]]
                if not mine:
                    self.send_error(404)
                    return
                links = "".join(
                    f'<a href="/files/{html.escape(p.name)}">{html.escape(p.name)}</a>\n'
                    for p in mine
                )
                self._send(f"<html><body>{links}</body></html>".encode())
            elif len(parts) == 2 and parts[0] == "files" and (index.folder / parts[1]).is_file():
                self._send((index.folder / parts[1]).read_bytes(), "application/octet-stream")
            else:
                self.send_error(404)

    return Handler


@contextlib.contextmanager
def serve_index(folder: Path) -> Iterator[PackageIndex]:
    """Serves `folder` as a package index on 127.0.0.1 and a free port while the block runs."""
    index = PackageIndex(Path(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(index))
    index.url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()

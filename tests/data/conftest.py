"""A local HTTP server for download tests: ranges on or off, connections cut on demand."""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@dataclass
class FileServer:
    """Serves ``folder``; records each request's headers; ``cut_after`` bytes ends the next
    response early (the connection drops), then resets to None."""

    folder: Path
    ranges: bool = True
    cut_after: int | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def status_codes(self) -> list[int]:
        return [int(request["status"]) for request in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        state: FileServer = self.server.state  # type: ignore[attr-defined]
        record = {key: value for key, value in self.headers.items()}
        record["path"] = self.path
        state.requests.append(record)
        path = state.folder / urllib.parse.unquote(self.path.lstrip("/"))
        if not path.is_file():
            record["status"] = "404"
            self.send_error(404)
            return
        data = path.read_bytes()
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        asked = self.headers.get("Range")
        condition = self.headers.get("If-Range")
        start = 0
        if state.ranges and asked and condition in (None, etag):
            start = int(asked.removeprefix("bytes=").partition("-")[0])
            if start >= len(data):
                record["status"] = "416"
                self.send_error(416)
                return
            record["status"] = "206"
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            record["status"] = "200"
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        if state.cut_after is not None:
            body, state.cut_after = body[: state.cut_after], None
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def file_server() -> Iterator[Callable[..., FileServer]]:
    """``file_server(folder, ranges=True)`` starts a server on a free localhost port."""
    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path, ranges: bool = True) -> FileServer:
        state = FileServer(Path(folder), ranges=ranges)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.state = state  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}/"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()

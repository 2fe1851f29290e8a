"""A small stand-in for the Hugging Face Hub on loopback: it answers the file routes
(`HEAD`/`GET /{repo}/resolve/{revision}/{path}`) that huggingface_hub's downloads use."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubState:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth
    truncate: set[str] = field(default_factory=set)  # files whose GET body is cut short

    def add_directory(self, repo: str, directory: Path) -> None:
        self.repos[repo] = {
            str(p.relative_to(directory)): p.read_bytes()
            for p in directory.rglob("*")
            if p.is_file()
        }


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _lookup(self) -> tuple[bytes | None, str, bool]:
            parts = self.path.split("?")[0].strip("/").split("/")
            # {org}/{name}/resolve/{revision}/{path...}
            if len(parts) < 5 or parts[2] != "resolve":
                return None, "RepoNotFound", False
            repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
            if repo not in state.repos:
                return None, "RepoNotFound", False
            body = state.repos[repo].get(filename)
            return body, "EntryNotFound", filename in state.truncate

        def _answer(self, send_body: bool) -> None:
            state.requests.append((self.command, self.path, self.headers.get("authorization")))
            body, error, cut = self._lookup()
            if body is None:
                self.send_response(404)
                self.send_header("X-Error-Code", error)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if send_body:
                self.wfile.write(body[: len(body) // 2] if cut else body)
                if cut:
                    self.wfile.flush()
                    self.close_connection = True

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

    return Handler


@contextmanager
def fake_hub(state: HubState) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

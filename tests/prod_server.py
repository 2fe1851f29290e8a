"""A real `python -m service` process for the tests that need one over HTTP: started with a
command and environment, its logs kept in a file (a pipe nobody reads would fill and block it)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.served import wait_until_ready
from tests.conftest import ROOT, free_port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        failure = wait_until_ready(self.url, self.process, timeout, poll_s=0.05)
        if failure is not None:
            raise AssertionError(f"{failure}: {self.logs()[-3000:]}")


@contextmanager
def running(
    env: dict[str, str], command: Sequence[str] | None = None, *, ready: bool = True
) -> Iterator[Server]:
    """Start the service on a free loopback port; stop it (if still running) on exit."""
    port = free_port()
    full_env = {**os.environ, "EMBED_HOST": "127.0.0.1", **env, "EMBED_PORT": str(port)}
    with tempfile.NamedTemporaryFile("wb", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            list(command or [sys.executable, "-m", "service"]),
            env=full_env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", Path(log.name))
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        server.log.unlink(missing_ok=True)


@contextmanager
def live_server(env: dict[str, str]) -> Iterator[str]:
    """A ready service with the given environment; yields its base URL."""
    with running(env) as server:
        yield server.url

"""Served figures: the real `python -m service` on loopback under concurrent HTTP load."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Load:
    passages_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float, poll_s: float = 0.2
) -> str | None:
    """Poll `url`/ready until it answers 200; None then, else why not (the process exited,
    or the timeout passed). Used by make bench, make soak and the tests' server helper."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"the service exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return None
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    return f"the service was not ready in {timeout:g}s"


@contextmanager
def server(
    env: dict[str, str], port: int | None = None, ready_timeout: float = 120.0
) -> Iterator[tuple[str, int]]:
    """`python -m service` on loopback (a free port unless given), ready; yields (url, pid).
    Used by make bench and make soak."""
    port = port or free_port()
    # The service's own defaults, log level included (info: an access line per request),
    # unless the caller's environment or `env` says otherwise.
    full = {**os.environ, "EMBED_HOST": "127.0.0.1", **env, "EMBED_PORT": str(port)}
    # BENCH_SERVER_LOG: a file for the server's log, to see why a run on another machine failed
    log_path = os.environ.get("BENCH_SERVER_LOG")
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        env=full,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        failure = wait_until_ready(url, process, ready_timeout)
        if failure is not None:
            raise RuntimeError(failure)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)
        if log_path:
            log.close()  # type: ignore[union-attr]


def _http_request(host: str, path: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection of the load generator: a request out, the status of
    its response back. The load generator shares the machine's cores with the server, so it
    must cost little: httpx took a visible share of 2 cores, and asyncio's streams (three
    awaits and a regex a response) 97-110 us of CPU a request at 32 clients."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need = -1  # bytes of the current response, once its head has arrived
        self.status = 0
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            self.status = int(head[9:12])
            self.need = end + 4 + (int(length.group(1)) if length else 0)
        if len(self.buffer) >= self.need:
            del self.buffer[: self.need]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("the server closed the connection"))

    async def exchange(self, request: bytes) -> int:
        """Send one request and wait for its response; returns the status."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


async def _run(
    url: str,
    model: str,
    texts: list[str],
    per_request: int,
    concurrency: int,
    seconds: float | None,
) -> Load:
    host, port = url.removeprefix("http://").split(":")
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    requests = [
        _http_request(host, "/v1/embeddings", {"input": chunk, "model": model}) for chunk in chunks
    ]
    latencies: list[float] = []
    errors = 0
    done = 0
    position = 0
    stop_at = time.perf_counter() + seconds if seconds else None

    async def worker() -> None:
        nonlocal errors, done, position
        transport, connection = await asyncio.get_running_loop().create_connection(
            _Connection, host, int(port)
        )
        try:
            while True:
                if stop_at is None and position >= len(chunks):
                    return
                if stop_at is not None and time.perf_counter() > stop_at:
                    return
                index = position % len(chunks)
                position += 1
                started = time.perf_counter()
                status = await connection.exchange(requests[index])
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors += 1
                else:
                    done += len(chunks[index])
        finally:
            transport.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return Load(done / elapsed, float(p50), float(p99), errors)


def _event_loop_run(coroutine: Coroutine[Any, Any, Load]) -> Load:
    """Run the load generator on uvloop where it is installed (a project dependency off
    Windows): it shares the cores with the server. 32 clients on 2 cores: 102 us of CPU per
    request, against 117 on asyncio's own loop
    (docs/benchmarks/2026-11-26-cpu-2core-overheads.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def load(
    url: str,
    model: str,
    texts: list[str],
    per_request: int,
    concurrency: int,
    seconds: float | None = None,
) -> Load:
    warm = texts[: 2 * concurrency * per_request]
    _event_loop_run(_run(url, model, warm, per_request, concurrency, None))
    return _event_loop_run(_run(url, model, texts, per_request, concurrency, seconds))

"""bench.served's load generator against a loopback HTTP server written here: every request
is sent and counted once, statuses are read right when the response arrives in pieces, and
the connection's end fails the request instead of hanging."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from bench import served

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, list[list[str]]], Awaitable[None]]


async def _serve_pieces(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[list[str]]
) -> None:
    """Answer each request with its one input reversed; an input "fail" gets 503. The
    response goes out in three writes that split the head and the body."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = json.loads(await reader.readexactly(length))
        seen.append(body["input"])
        text = body["input"][0]
        status = b"503 Service Unavailable" if text == "fail" else b"200 OK"
        payload = json.dumps({"echo": text[::-1]}).encode()
        response = (
            b"HTTP/1.1 "
            + status
            + b"\r\ncontent-type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )
        for piece in (response[:7], response[7:-5], response[-5:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
    writer.close()


def _run_against(
    handler: Handler, texts: list[str], concurrency: int
) -> tuple[served.Load, list[list[str]]]:
    seen: list[list[str]] = []

    async def main() -> served.Load:
        server = await asyncio.start_server(lambda r, w: handler(r, w, seen), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await served._run(f"http://127.0.0.1:{port}", "m", texts, 1, concurrency, None)

    return asyncio.run(main()), seen


def test_each_request_is_sent_once_and_its_status_read_from_a_split_response() -> None:
    texts = [f"passage {i}" for i in range(23)] + ["fail", "fail"]
    load, seen = _run_against(_serve_pieces, texts, concurrency=4)
    assert sorted(item[0] for item in seen) == sorted(texts)
    assert load.errors == 2
    assert load.passages_per_s > 0 and 0 < load.p50_ms <= load.p99_ms


async def _hang_up(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[list[str]]
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    await writer.drain()
    writer.close()


def test_a_connection_closed_mid_response_fails_instead_of_hanging() -> None:
    with pytest.raises(ConnectionError):
        _run_against(_hang_up, ["one"], concurrency=1)

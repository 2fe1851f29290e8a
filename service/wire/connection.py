"""One end of a framed Unix-socket connection (service/wire/frames.py): messages in, handed
to ``received``; messages out, coalesced: those sent in one turn of the event loop (a batch's
answers, the requests of every connection that turn) travel as one frame, one pickle and
one write. Under load the engine's event loop spent 44-46 us a request this way, against
54-58 with a frame per message (docs/benchmarks/2026-12-02-cpu-2core-workers.md)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from service.wire.frames import FrameReader, encode
from service.wire.messages import Message, from_wire, to_wire


class FramedProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = FrameReader()
        self._outgoing: list[Any] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._outgoing.clear()

    def data_received(self, data: bytes) -> None:
        for messages in self._reader.feed(data):
            for message in messages:
                self.received(from_wire(message))

    def received(self, message: Message) -> None:
        raise NotImplementedError

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, message: Message) -> None:
        if self.transport is None:
            return
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(to_wire(message))

    def _flush(self) -> None:
        """Everything queued, as one frame in one write (uvloop's writelines would try a
        send per piece)."""
        messages, self._outgoing = self._outgoing, []
        if self.transport is not None and messages:
            self.transport.write(b"".join(encode(messages)))

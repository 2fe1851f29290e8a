"""The engine's side of the Unix socket: requests from every request-handling process into
the models' batchers. The messages and the rules of the exchange are in
service/wire/messages.py; replies produced in one turn of the event loop (a batch's worth)
leave in one write. A connection that closes cancels its requests: their items are dropped
before they cost inference.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from service.engine.batcher import Batcher, _Request
from service.errors import ServiceError, Unavailable
from service.models.registry import ModelRegistry
from service.wire.connection import FramedProtocol
from service.wire.messages import Cancel, Done, Failed, Message, ModelState, Status, Submit
from service.wire.packing import pack_results, unpack_items

log = logging.getLogger(__name__)


def model_status(registry: ModelRegistry) -> Status:
    """What a request-handling process needs to serve the models: each one's final spec
    (variant applied), directory and sessions, and whether all are ready."""
    models = {
        name: ModelState(
            spec=model.spec,
            directory=str(model.directory),
            variant=model.variant,
            variant_check=model.variant_check,
            provider=model.provider,
            session_threads=model.session_threads,
            alive=model.batcher is None or model.batcher.alive,
        )
        for name, model in registry.models.items()
    }
    return Status(registry.ready, registry.error, registry.expected, models)


class EngineServer:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.connections: set[EngineConnection] = set()

    async def serve(self, path: str) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_unix_server(lambda: EngineConnection(self), path)

    def close(self) -> None:
        """Close every connection (stopping: their requests are cancelled)."""
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()

    def status(self) -> Status:
        return model_status(self.registry)

    def publish(self) -> None:
        """Send the status to every process (once the models are loaded or failed, and when
        the engine starts draining); a process that connects later gets it on connecting."""
        status = self.status()
        for connection in list(self.connections):
            connection.send(status)


class EngineConnection(FramedProtocol):
    """One request-handling process."""

    def __init__(self, server: EngineServer) -> None:
        super().__init__()
        self.server = server
        self.pending: dict[int, tuple[Batcher, _Request]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.connections.add(self)
        self.send(self.server.status())

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.server.connections.discard(self)
        for batcher, request in self.pending.values():
            batcher.forget(request)
        self.pending.clear()

    def received(self, message: Message) -> None:
        match message:
            case Submit(rid, name, packed, bulk):
                self.submit(rid, name, packed, bulk)
            case Cancel(rid):
                found = self.pending.pop(rid, None)
                if found is not None:
                    found[0].forget(found[1])
            case _:
                log.error("unexpected message from a request-handling process: %r", message)

    def submit(self, rid: int, name: str, packed: Any, bulk: bool = False) -> None:
        model = self.server.registry.models.get(name)
        batcher = model.batcher if model is not None else None
        if not isinstance(batcher, Batcher):
            self.fail(rid, Unavailable(f"model {name!r} is not loaded in the engine"))
            return
        try:
            request = batcher.accept(unpack_items(packed), bulk=bulk)
        except ServiceError as error:
            self.fail(rid, error)
            return
        self.pending[rid] = (batcher, request)
        request.future.add_done_callback(functools.partial(self.answer, rid, batcher, request))

    def answer(self, rid: int, batcher: Batcher, request: _Request, _: object) -> None:
        if self.pending.pop(rid, None) is None or request.future.cancelled():
            return  # cancelled by its process, or its connection closed
        error = request.future.exception()
        if error is None:
            wait, inference = batcher.finished(request)
            self.send(Done(rid, pack_results(request.future.result()), wait, inference))
        elif isinstance(error, ServiceError):
            self.fail(rid, error)
        else:  # the batcher turns inference errors into ServiceErrors; anything else is a bug
            log.error("request %d failed in the engine", rid, exc_info=error)
            self.fail(rid, Unavailable("the engine failed this request"))

    def fail(self, rid: int, error: ServiceError) -> None:
        name = type(error).__name__
        self.send(Failed(rid, name, error.message, error.code, error.param, error.headers))

"""A request-handling process's link to the engine process (the multi-process mode,
``EMBED_WORKERS`` above 1; docs/scaling.md).

The link connects to the engine's Unix socket and keeps reconnecting while the process runs.
The engine's status fills the registry with each model's spec, tokenizer and resources (no
sessions here) and a ``RemoteBatcher`` in place of the engine's batcher: the serving code
calls ``model.batcher.submit(prepare)`` in both modes. ``prepare`` runs here, in a worker
thread; only its items (token ids, pixels: numpy buffers) cross to the engine.

When the engine goes away every request waiting on it fails at once with 503, ``/ready``
turns 503, and the link reconnects until the supervisor's new engine answers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.engine.priority import is_bulk
from service.errors import ModelLoadError, Unavailable, rebuild, timed_out
from service.models.kinds.registry import handler_for
from service.models.loaded import LoadedModel, open_model
from service.models.registry import ModelRegistry
from service.ops import timing
from service.ops.metrics import Metrics, ModelObserver
from service.wire.connection import FramedProtocol
from service.wire.messages import Cancel, Done, Failed, Message, ModelState, Status, Submit
from service.wire.packing import pack_items, unpack_results

log = logging.getLogger(__name__)
RECONNECT_S = 0.05  # between attempts to reach an engine that is (re)starting
Answer = tuple[list[Any], float, float]  # results, queue seconds, inference seconds


class _Connection(FramedProtocol):
    def __init__(self, link: EngineLink) -> None:
        super().__init__()
        self.link = link
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def received(self, message: Message) -> None:
        self.link.received(message)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)


class EngineLink:
    def __init__(
        self, path: str, registry: ModelRegistry, metrics: Metrics, timeout_s: float
    ) -> None:
        self.path = path
        self.registry = registry
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.alive: dict[str, bool] = {}  # each model's batcher, as the engine last said
        self._connection: _Connection | None = None
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        self._ids = itertools.count()
        self._adopting: asyncio.Task[None] | None = None
        self._latest = Status(ready=False, error=None, expected=0, models={})  # the last one
        self._open_error: str | None = None  # a model the engine serves failed to open here
        registry.engine_ready = False  # until the engine says so
        self.serving = asyncio.Event()  # set once every model is open here and ready

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.open

    async def run(self) -> None:
        """Connect, serve until the engine goes, fail what was waiting, reconnect; forever
        (cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, connection = await loop.create_unix_connection(
                    lambda: _Connection(self), self.path
                )
            except OSError:
                await asyncio.sleep(RECONNECT_S)
                continue
            self._connection = connection
            log.info("connected to the engine at %s", self.path)
            try:
                await connection.closed
            finally:
                if connection.transport is not None:
                    connection.transport.close()  # stopping: this process is done
                self._connection = None
                self._lost()

    def _lost(self) -> None:
        self.alive = {}
        self.registry.engine_ready = False
        pending, self._pending = self._pending, {}
        error = Unavailable(
            "the engine process stopped before answering; retry shortly",
            code="engine_unavailable",
        )
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        if pending:
            log.error("the engine went away with %d requests in flight", len(pending))

    def received(self, message: Message) -> None:
        match message:
            case Done(rid, results, wait, inference):
                future = self._pending.pop(rid, None)
                if future is not None and not future.done():
                    future.set_result((unpack_results(results), wait, inference))
            case Failed(rid, name, text, code, param, headers):
                future = self._pending.pop(rid, None)
                if future is not None and not future.done():
                    future.set_exception(rebuild(name, text, code, param, headers))
            case Status():
                self._status(message)
            case _:
                log.error("unexpected message from the engine: %r", message)

    def _status(self, status: Status) -> None:
        self._latest = status
        self.registry.expected = status.expected
        self.registry.error = status.error or self._open_error
        self.registry.engine_ready = status.ready
        self.alive = {name: model.alive for name, model in status.models.items()}
        self._check_serving()
        if self._adopting is None and self._missing():
            self._adopting = asyncio.get_running_loop().create_task(self._adopt())

    def _missing(self) -> dict[str, ModelState]:
        """The models the engine's latest status names that are not open here yet."""
        models = self._latest.models
        return {n: m for n, m in models.items() if n not in self.registry.models}

    async def _adopt(self) -> None:
        """Open the engine's models here (tokenizers and resources, in a thread) until every
        model of its latest status is open: a status that arrives while a model opens, naming
        more models, is taken up by the same task (a status dropped here once left a process
        that never turned ready)."""
        self._open_error = None
        try:
            while missing := self._missing():
                for name, described in missing.items():
                    model = await asyncio.to_thread(_open, described)
                    model.batcher = RemoteBatcher(self, name, self.metrics.observer(name))
                    self.registry.add(model)
            self._check_serving()
        except (ModelLoadError, OSError) as exc:
            self._open_error = f"request-handling process could not open a model: {exc}"
            self.registry.error = self._open_error
            log.error("%s", self._open_error)
        finally:
            self._adopting = None

    def _check_serving(self) -> None:
        if self.registry.ready:
            self.serving.set()

    def submit(
        self, name: str, items: Sequence[tuple[int, Any]], bulk: bool = False
    ) -> tuple[int, Any]:
        """Send one request's items (bulk: in the bulk priority class); its id and the
        future of its answer."""
        if self._connection is None or not self._connection.open:
            raise Unavailable("the engine process is restarting; retry shortly", code="not_ready")
        rid = next(self._ids)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._connection.send(Submit(rid, name, pack_items(items), bulk))
        return rid, future

    def cancel(self, rid: int) -> None:
        if self._pending.pop(rid, None) is not None and self._connection is not None:
            self._connection.send(Cancel(rid))


def _open(described: ModelState) -> LoadedModel:
    spec = described.spec
    model = open_model(spec, Path(described.directory), handler_for(spec))
    model.variant = described.variant
    model.variant_check = described.variant_check
    model.provider = described.provider
    model.session_threads = described.session_threads
    return model


class RemoteBatcher:
    """The engine's batcher of one model, seen from a request-handling process."""

    def __init__(self, link: EngineLink, name: str, observer: ModelObserver) -> None:
        self.link = link
        self.name = name
        self.observer = observer

    @property
    def alive(self) -> bool:
        return self.link.connected and self.link.alive.get(self.name, False)

    async def submit(self, prepare: Callable[[], Sequence[tuple[int, Any]]]) -> list[Any]:
        """Prepare here (a worker thread), run in the engine; the same errors as the
        engine's own batcher: 429 when its queue is full, 503 past the timeout."""
        bulk = is_bulk()
        items = await timing.prepared(prepare, self.observer.tokenized)
        if not items:
            return []
        rid, future = self.link.submit(self.name, items, bulk)
        try:
            async with asyncio.timeout(self.link.timeout_s):
                results, wait, inference = await future
        except TimeoutError:
            self.observer.rejected("timeout")
            raise timed_out(self.name, self.link.timeout_s) from None
        finally:
            if not future.done():
                self.link.cancel(rid)
        timing.add("queue", wait)
        timing.add("inference", inference)
        return list(results)

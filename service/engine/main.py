"""The engine process of the multi-process mode: every model's sessions and batcher, once
per device, serving the request-handling processes over a Unix socket (server.py).

Started by the supervisor (service/launch/supervisor.py) with the same settings as the
request-handling processes. On SIGTERM (sent once they have all drained) it tells them it
is draining, lets running batches finish, fails anything still queued with 503, and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from service.engine.loading import start_loading, stop_all
from service.engine.server import EngineServer
from service.models.registry import ModelRegistry
from service.ops.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


class Engine:
    """The engine's lifetime: its socket server, then loading, and an orderly stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ModelRegistry()
        self.server = EngineServer(self.registry)
        self._listening: asyncio.AbstractServer | None = None
        self._loading: asyncio.Task[None] | None = None

    async def start(self, socket_path: str) -> None:
        """Load the models in the background, publishing the outcome, and listen on the
        socket at once (processes connect and learn the models are loading). Loading starts
        first: the registry then knows the models to come before any process can connect."""
        if os.path.exists(socket_path):
            os.unlink(socket_path)  # left by an engine that died
        self._loading = start_loading(self.registry, self.settings, Metrics())
        self._loading.add_done_callback(lambda _: self.server.publish())
        self._listening = await self.server.serve(socket_path)

    async def stop(self) -> None:
        """Tell every process it is draining, let running batches finish, fail what is still
        queued with 503, close every connection and the socket."""
        self.registry.draining = True
        self.server.publish()
        if self._loading is not None:
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        await stop_all(self.registry)
        self.server.close()
        if self._listening is not None:
            self._listening.close()
            await self._listening.wait_closed()


async def run_engine(settings: Settings, socket_path: str) -> None:
    """The engine process: serve until SIGTERM or SIGINT."""
    engine = Engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await engine.start(socket_path)
    log.info("engine listening on %s (pid %d)", socket_path, os.getpid())
    await stop.wait()
    log.info("engine stopping")
    await engine.stop()

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

from service.engine.loading import load_all, stop_all
from service.engine.server import EngineServer
from service.models.registry import ModelRegistry
from service.ops.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


async def run_engine(settings: Settings, socket_path: str) -> None:
    registry = ModelRegistry()
    server = EngineServer(registry)
    if os.path.exists(socket_path):
        os.unlink(socket_path)  # left by an engine that died
    listening = await server.serve(socket_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.create_task(load_all(registry, settings, Metrics()))
    loading.add_done_callback(lambda _: server.publish())
    log.info("engine listening on %s (pid %d)", socket_path, os.getpid())
    await stop.wait()
    log.info("engine stopping")
    registry.draining = True
    server.publish()
    loading.cancel()
    await asyncio.gather(loading, return_exceptions=True)
    await stop_all(registry)
    server.close()
    listening.close()
    await listening.wait_closed()

"""The API tests in the multi-process mode's shape, inside one test process: an engine on
its own event loop in a thread (what the engine process runs: loading, batchers, the Unix
socket server) and the app linked to it over a real socket, as a request-handling process
is. `make test` runs the API test modules once this way (EMBED_TEST_ENGINE=1)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.engine.loading import load_all, stop_all
from service.engine.server import EngineServer
from service.models.registry import ModelRegistry
from service.ops.metrics import Metrics
from service.settings import Settings

ENABLED = os.environ.get("EMBED_TEST_ENGINE", "") == "1"


@contextmanager
def engine_thread(settings: Settings) -> Iterator[tuple[str, ModelRegistry]]:
    """An engine serving `settings`' models on a Unix socket: (socket path, its registry)."""
    directory = tempfile.mkdtemp(prefix="engine-test-")
    path = str(Path(directory) / "engine.sock")
    registry = ModelRegistry()
    loop = asyncio.new_event_loop()
    listening: list[asyncio.AbstractServer] = []
    server = EngineServer(registry)

    async def start() -> None:
        listening.append(await server.serve(path))
        task = asyncio.create_task(load_all(registry, settings, Metrics()))
        task.add_done_callback(lambda _: server.publish())

    thread = threading.Thread(target=loop.run_forever, name="test-engine", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield path, registry
    finally:

        async def stop() -> None:
            await stop_all(registry)
            server.close()
            listening[0].close()
            await listening[0].wait_closed()
            await asyncio.sleep(0)  # the transports' closing callbacks

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        Path(path).unlink(missing_ok=True)
        os.rmdir(directory)

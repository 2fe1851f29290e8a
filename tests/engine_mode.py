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

from service.engine.main import Engine
from service.models.registry import ModelRegistry
from service.settings import Settings

ENABLED = os.environ.get("EMBED_TEST_ENGINE", "") == "1"


@contextmanager
def engine_thread(settings: Settings) -> Iterator[tuple[str, ModelRegistry]]:
    """An engine serving `settings`' models on a Unix socket, as the engine process runs
    it (service/engine/main.py): (socket path, its registry)."""
    directory = tempfile.mkdtemp(prefix="engine-test-")
    path = str(Path(directory) / "engine.sock")
    loop = asyncio.new_event_loop()
    engine = Engine(settings)
    thread = threading.Thread(target=loop.run_forever, name="test-engine", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(engine.start(path), loop).result(timeout=30)
    try:
        yield path, engine.registry
    finally:

        async def stop() -> None:
            await engine.stop()
            await asyncio.sleep(0)  # the transports' closing callbacks

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        Path(path).unlink(missing_ok=True)
        os.rmdir(directory)

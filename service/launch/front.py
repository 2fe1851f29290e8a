"""A request-handling process of the multi-process mode: uvicorn on its own listening socket
for the service's port (SO_REUSEPORT: the kernel spreads connections over the processes),
the app linked to the engine process (engine_link.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import uvicorn

from service.app import create_app
from service.launch.children import engine_socket, port_opened
from service.launch.shutdown import DrainingServer
from service.launch.supervisor import listening_socket
from service.settings import Settings

log = logging.getLogger(__name__)
PROBE_S = 0.1  # how often a process waiting to join the port asks the port's /ready


def run_front(settings: Settings, runtime: Path, when_ready: bool = False) -> None:
    """Serve until SIGTERM. The supervisor's first process listens at once (so /health
    answers while the engine loads); the others, and a replacement for one that died, listen
    only once the engine and every model are ready here and the port's /ready says 200
    (`when_ready`). So a process joins only after the ones already listening are ready: the
    kernel sends no connection to a process that would refuse it, and /ready's 200 holds for
    every process on the port (a second process ready before the first one made /ready say
    200 while the first still answered 503)."""

    async def port_ready() -> None:
        log.info("ready here; joining the port once its /ready says 200")
        await wait_for_port_ready(settings.host, settings.port, port_opened(runtime))

    app = create_app(
        settings,
        engine_socket=str(engine_socket(runtime)),
        wait_for_engine=when_ready,
        before_listening=port_ready if when_ready else None,
    )
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    listener = listening_socket(settings.host, settings.port)
    listener.bind((settings.host, settings.port))
    if not when_ready:
        listener.listen(2048)  # else uvicorn listens after the start-up, when it serves
        port_opened(runtime).touch()
    DrainingServer(config, app.state.registry, exit_before_start=when_ready).run(sockets=[listener])


async def wait_for_port_ready(host: str, port: int, opened: Path) -> None:
    """Until GET /ready on the port answers 200, or no process listens there once the first
    process has (the file `opened` exists): a refused connection then means that none is
    ahead of this one. Before it, the first process may still be starting (a process that
    turned ready here first and joined the empty port let the port's /ready say 200 while
    the first one, listening just after, answered 503). Asked before this process listens,
    it is answered by the processes already listening there."""
    probe = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    while True:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            try:
                reader, writer = await asyncio.open_connection(probe, port)
            except ConnectionRefusedError:
                if opened.exists():
                    return
            else:
                try:
                    writer.write(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    await writer.drain()
                    status_line = await reader.readline()
                finally:
                    writer.close()
                if status_line.split(b" ")[1:2] == [b"200"]:
                    return
        await asyncio.sleep(PROBE_S)

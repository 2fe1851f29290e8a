"""A request-handling process of the multi-process mode: uvicorn on its own listening socket
for the service's port (SO_REUSEPORT: the kernel spreads connections over the processes),
the app linked to the engine process (engine_link.py)."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from service.app import create_app
from service.launch.children import engine_socket
from service.launch.shutdown import DrainingServer
from service.launch.supervisor import listening_socket
from service.settings import Settings


def run_front(settings: Settings, runtime: Path, when_ready: bool = False) -> None:
    """Serve until SIGTERM. The supervisor's first process listens at once (so /health
    answers while the engine loads); the others, and a replacement for one that died, listen
    only once the engine and every model are ready here (`when_ready`), so that the kernel
    sends them no connection they would refuse."""
    app = create_app(
        settings, engine_socket=str(engine_socket(runtime)), wait_for_engine=when_ready
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
    DrainingServer(config, app.state.registry, exit_before_start=when_ready).run(sockets=[listener])

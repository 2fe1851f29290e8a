"""A request-handling process of the multi-process mode: uvicorn on the supervisor's
listening socket, the app linked to the engine process (engine_link.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import uvicorn

from service.app import create_app
from service.ops.shutdown import DrainingServer
from service.settings import Settings


def run_front(settings: Settings, runtime: Path, fd: int) -> None:
    app = create_app(settings, engine_socket=str(runtime / "engine.sock"))
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    listener = socket.socket(fileno=fd)
    DrainingServer(config, app.state.registry).run(sockets=[listener])

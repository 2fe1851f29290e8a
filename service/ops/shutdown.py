"""Graceful shutdown: uvicorn's server with a draining step in front of its own.

On SIGTERM (or SIGINT) the registry starts draining at once: /ready answers 503 and the guard
refuses new requests with 503. uvicorn then stops listening, closes idle keep-alive
connections, lets in-flight requests finish (up to ``shutdown_timeout_s``), runs the
lifespan shutdown (batchers stopped), and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from service.models.registry import ModelRegistry

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, registry: ModelRegistry) -> None:
        super().__init__(config)
        self.registry = registry

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.registry.draining:
            log.info(
                "signal %s: draining (in-flight requests finish, new ones are refused)",
                signal.Signals(sig).name,
            )
        self.registry.draining = True
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signals it caught once its graceful shutdown is done, which
        # would end the process with 128 + SIGTERM; a drained stop is a clean exit (0).
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)

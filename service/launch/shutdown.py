"""Graceful shutdown: uvicorn's server with a draining step in front of its own.

On SIGTERM (or SIGINT) the registry starts draining at once: /ready answers 503 and the guard
refuses new requests with 503. uvicorn then stops listening, closes idle keep-alive
connections, lets in-flight requests finish (up to ``shutdown_timeout_s``), runs the
lifespan shutdown (batchers stopped), and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

import uvicorn

from service.models.registry import ModelRegistry

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, registry: ModelRegistry, exit_before_start: bool = False
    ) -> None:
        super().__init__(config)
        self.registry = registry
        # A replacement request-handling process waits in its start-up for the engine and
        # has accepted nothing: a signal then ends it at once (uvicorn would only notice
        # once the start-up finished, which may be never if the engine is gone too).
        self.exit_before_start = exit_before_start

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.exit_before_start and not self.started:
            log.info("signal %s before serving: exiting", signal.Signals(sig).name)
            os._exit(0)
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

"""Stopping a running bulk batch when live work arrives for its worker (docs/batch.md).

The batcher gives each bulk batch a ``Stop``. The worker's thread makes it current while the
batch runs (``running``); the graph's runner arms it for its run (ONNX Runtime: the run's
``RunOptions.terminate``, checked before each node). ``Stop.request()``, from the event
loop, ends the run early: the runner raises ``Interrupted`` and the batcher puts the batch's
items back at the front of the bulk queue. A run that ends before the request lands (or a
runner that cannot be stopped) returns its results as usual, so each item gets exactly one
result either way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Interrupted(Exception):
    """A run ended early because its Stop was requested: its items run again later."""


class Stop:
    """Thread-safe: requested from the event loop, armed by the worker's runner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._hook: Callable[[], None] | None = None

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self) -> None:
        """Stop the run in progress (if any) and any run still to be armed with this Stop."""
        with self._lock:
            self._requested = True
            hook = self._hook
        if hook is not None:
            hook()

    @contextmanager
    def armed(self, hook: Callable[[], None]) -> Iterator[None]:
        """While a run is in progress: `hook` stops it (called at once if already requested)."""
        with self._lock:
            self._hook = hook
            requested = self._requested
        if requested:
            hook()
        try:
            yield
        finally:
            with self._lock:
                self._hook = None


_CURRENT: ContextVar[Stop | None] = ContextVar("embed_run_stop", default=None)


def current() -> Stop | None:
    """The Stop of the batch this thread is running (None: a batch that is never stopped)."""
    return _CURRENT.get()


@contextmanager
def running(stop: Stop | None) -> Iterator[None]:
    """In a worker's thread, around one batch: its runs can be stopped through `stop`."""
    token = _CURRENT.set(stop)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class StopPolicy:
    """Which running bulk batch a live batch stops: only one in the first `within` of its
    expected run, expected from the bulk batches that ran to the end (seconds per padded
    token, a moving average). So a stop wastes at most that much work, a batch past it runs
    to the end (the live batch waits at most the rest), and a job makes progress however
    often live work comes. Before any bulk batch has run to the end nothing is stopped."""

    SMOOTHING = 0.2  # weight of the newest batch in the average

    def __init__(self, within: float) -> None:
        self.within = within
        self.seconds_per_token: float | None = None

    def ran(self, tokens: int, seconds: float) -> None:
        """A bulk batch of `tokens` padded tokens ran to the end in `seconds`."""
        if tokens <= 0:
            return
        rate = seconds / tokens
        old = self.seconds_per_token
        self.seconds_per_token = rate if old is None else old + self.SMOOTHING * (rate - old)

    def worth_stopping(self, tokens: int, elapsed: float) -> bool:
        """Whether a bulk batch of `tokens` that has run `elapsed` seconds is to be stopped."""
        if self.seconds_per_token is None:
            return False
        return elapsed < self.within * self.seconds_per_token * tokens

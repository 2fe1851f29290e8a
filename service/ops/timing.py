"""Per-request timings (tokenization, queue wait, inference) for the response's headers.

The request middleware opens a dict for each request in a context variable; the batcher adds
to it from inside the request's own task (contexts are copied into child tasks and threads,
and the dict is shared), and the middleware writes what was recorded as headers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

_current: ContextVar[dict[str, float] | None] = ContextVar("request_timings", default=None)

PHASES = ("tokenize", "queue", "inference")


def start() -> dict[str, float]:
    """Begin recording for the current request; returns the dict the phases add to."""
    timings: dict[str, float] = {}
    _current.set(timings)
    return timings


def add(phase: str, seconds: float) -> None:
    """Add `seconds` to `phase` of the current request (no-op outside a request)."""
    timings = _current.get()
    if timings is not None:
        timings[phase] = timings.get(phase, 0.0) + seconds


def recorded(name: str) -> float:
    """What the current request has recorded under `name` so far (0 outside a request)."""
    timings = _current.get()
    return timings.get(name, 0.0) if timings is not None else 0.0


def headers(timings: dict[str, float]) -> list[tuple[bytes, bytes]]:
    return [
        (f"x-{phase}-time-ms".encode(), f"{timings[phase] * 1000:.2f}".encode())
        for phase in PHASES
        if phase in timings
    ]


async def prepared(prepare: Callable[[], T], observe: Callable[[float], None]) -> T:
    """Run a request's preparation (tokenizing, decoding images) in a worker thread, off the
    event loop; its seconds go to `observe` (the tokenization metric) and to the headers."""
    started = time.perf_counter()
    result = await asyncio.to_thread(prepare)
    seconds = time.perf_counter() - started
    observe(seconds)
    add("tokenize", seconds)
    return result

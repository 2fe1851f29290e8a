"""The priority class of the work being submitted: live requests, or bulk (batch jobs).

Bulk work is marked with a context variable rather than an argument, so every serving
function that ends in ``model.batcher.submit`` runs bulk work unchanged: the batch job runner
(service/bulk/runner.py) sets it around the requests it makes, and the batcher (here, or the
engine's through a request-handling process's link) queues their items in its bulk queue,
which runs only when no live item waits (service/engine/batcher.py).
"""

from __future__ import annotations

from contextvars import ContextVar

BULK: ContextVar[bool] = ContextVar("embed_bulk", default=False)


def is_bulk() -> bool:
    return BULK.get()

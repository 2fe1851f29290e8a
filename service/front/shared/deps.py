"""What every route needs: the app's registry and settings, the chosen model recorded for
metrics, and running work so that a client that hangs up stops costing inference."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response

from service.errors import Unavailable
from service.models.loaded import LoadedModel
from service.models.registry import ModelRegistry
from service.settings import Settings

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's code for a client that closed the connection


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def registry(request: Request) -> ModelRegistry:
    reg: ModelRegistry = request.app.state.registry
    return reg


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def pick_model(request: Request, name: str | None, *kinds: str) -> LoadedModel:
    reg = registry(request)
    if reg.error is not None:
        raise Unavailable("models failed to load; see GET /ready", code="not_ready")
    if len(reg.models) < reg.expected or not reg.engine_ready:
        raise Unavailable("models are still loading; see GET /ready", code="not_ready")
    model = reg.get(name, kinds)
    request.scope.setdefault("state", {})["model"] = model.name
    return model


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so dropping its queued inputs) if the client leaves
    or this request is itself cancelled (a batch job's line when the job is cancelled or
    its runner stops; the server cancelling its handlers)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()  # left running, its inputs would be inferred for nobody
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientGone


def client_gone_response(*_: Any) -> Response:
    return Response(status_code=CLIENT_CLOSED)

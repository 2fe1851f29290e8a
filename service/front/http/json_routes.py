"""A short path for well-formed JSON requests to the embedding routes.

FastAPI's per-request machinery (route matching over every route, the request wrapper and
exception layers, content-type parsing, dependency solving, the standard library's JSON
reader) cost the event loop more per request than the route's own code; without it the loop
spends 28% less CPU per request under load
(docs/benchmarks/2026-11-26-cpu-2core-json-routes.md).

Every POST route whose endpoint is ``async def f(body: SomeModel, request: Request)`` is
served here instead: the body is parsed with orjson, validated with
``SomeModel.model_validate`` (the lax Python-mode validation FastAPI runs on the parsed
body), and handed to the same endpoint function, whose errors go through the app's own
exception handlers.

FastAPI still declares these routes (OpenAPI, /docs) and still serves every request this
path does not take: anything not declared application/json, a body that does not parse or
validate (so every 400 for a malformed body is FastAPI's, word for word), other methods and
other paths.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, get_type_hints

import orjson
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.front.http.guard import read_body, replaying


@dataclass(frozen=True)
class JsonRoute:
    route: APIRoute
    model: type[BaseModel]


def json_routes(routers: Iterable[APIRouter]) -> dict[str, JsonRoute]:
    """The POST routes taken by the short path, by path: those whose endpoint takes exactly
    (body: a pydantic model, request: Request), with no dependencies. The routers must be
    included in the app without a prefix or dependencies, as create_app includes them."""
    found: dict[str, JsonRoute] = {}
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or route.methods != {"POST"}:
                continue
            if route.dependencies or "{" in route.path:
                continue
            parameters = list(inspect.signature(route.endpoint).parameters.values())
            if len(parameters) != 2 or any(p.default is not p.empty for p in parameters):
                continue
            hints = get_type_hints(route.endpoint)
            model, request = (hints.get(p.name) for p in parameters)
            if (
                isinstance(model, type)
                and issubclass(model, BaseModel)
                and request is Request
                and inspect.iscoroutinefunction(route.endpoint)
            ):
                found[route.path] = JsonRoute(route, model)
    return found


def is_json(scope: Scope) -> bool:
    """The request says its body is application/json (parameters such as charset allowed)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json"
    return False


class JsonRoutes:
    """ASGI middleware, inside the guard: serves the short path, passes everything else on."""

    def __init__(self, app: ASGIApp, routes: dict[str, JsonRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        messages, _ = await read_body(receive, sys.maxsize)  # the guard has applied the limit
        assert messages is not None
        try:
            body = route.model.model_validate(orjson.loads(_joined(messages)))
        except (orjson.JSONDecodeError, ValidationError):
            # FastAPI renders the error, exactly as it would have without this path
            await self.app(scope, replaying(messages, receive), send)
            return
        scope["route"] = route.route  # what FastAPI's router records (request metrics)
        request = Request(scope, replaying(list(messages), receive))
        try:
            response: Response = await route.route.endpoint(body, request)
        except Exception as exc:
            handler = _handler(scope, exc)
            if handler is None:
                raise  # as from FastAPI's routes: RequestContext answers 500
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _route(self, scope: Scope) -> JsonRoute | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        route = self.routes.get(path)
        return route if route is not None and is_json(scope) else None


def _joined(messages: list[Any]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")


def _handler(scope: Scope, exc: Exception) -> Callable[..., Any] | None:
    """The app's handler for `exc` by class, as Starlette's ExceptionMiddleware finds it;
    the catch-all for Exception is not one (it answers outside the middleware)."""
    handlers: dict[Any, Callable[..., Any]] = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None

"""Admission control in front of every route, as pure ASGI middleware (BaseHTTPMiddleware
would break disconnect detection): draining, API keys, body size and concurrency.

Each refusal is decided before the route reads the body or does any work, and comes out in
the one error envelope. Order: a draining process refuses with 503, a missing or wrong key
gets 401, a body over the limit 413, and more requests at once than allowed 429.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.engine.priority import is_bulk
from service.errors import (
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    Unavailable,
)
from service.front.http.errors import error_response
from service.models.registry import ModelRegistry
from service.ops.timing import PHASES
from service.settings import Settings

OPERATIONS = frozenset({"/health", "/ready", "/metrics"})
"""Routes that are never refused for load or draining (probes and scrapes must get through)."""

PROBES = frozenset({("GET", "/health"), ("GET", "/ready")})
"""The requests that never need an API key: the liveness and readiness probes (a kubelet
sends no key). Everything else needs one when keys are set (docs/production.md)."""
PAGE = frozenset({("GET", "/")})
"""The try-it page, when it is on (``EMBED_UI``): it holds no data, and a browser cannot send
a key for a page it navigates to. ``POST /`` (TEI's embed) is not in it."""
PAGE_FILES = ("/ui/", frozenset({"GET", "HEAD"}))
"""The page's static files: a path prefix and the methods that read them."""


def public_requests(settings: Settings) -> frozenset[tuple[str, str]]:
    """The (method, path) pairs answered without a key when keys are set; the page's files
    (PAGE_FILES) besides, when the page is on."""
    public = PROBES | (PAGE if settings.ui else frozenset())
    return public | ({("GET", "/metrics")} if settings.metrics_public else frozenset())


def key_matches(given: bytes, keys: list[bytes]) -> bool:
    """Compare with every key in constant time (no early exit on a match)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched


def bearer_token(scope: Scope) -> bytes:
    value: bytes = dict(scope["headers"]).get(b"authorization", b"")
    scheme, _, token = value.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


def declared_length(scope: Scope) -> int | None:
    value = dict(scope["headers"]).get(b"content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidInput("the Content-Length header is not a number")
    return int(value)


async def read_body(receive: Receive, limit: int) -> tuple[list[Message] | None, int]:
    """Read a body of unknown length (chunked) up to `limit` bytes: its messages and size,
    or None and the size read so far once it passes the limit."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, size
        size += len(message.get("body", b""))
        if size > limit:
            return None, size
        if not message.get("more_body", False):
            return messages, size


def replaying(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings, registry: ModelRegistry) -> None:
        self.app = app
        self.registry = registry
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self.without_key = public_requests(settings)
        self.page_files = settings.ui
        self.max_body = settings.max_body_bytes
        # Routes that take uploads have their own, larger, body limit.
        self.route_limits = {
            "/embed/image": settings.image_max_request_bytes,
            "/embed/multimodal": settings.image_max_request_bytes,
            "/v1/files": settings.max_file_bytes + 64 * 1024,  # the file, and the form around it
        }
        self.max_concurrent = settings.max_concurrent_requests
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A batch job's line (made in-process, in the bulk class) is bounded by
        # EMBED_BATCH_CONCURRENCY instead: it neither counts nor is counted against the live
        # limit, which would otherwise refuse live requests and status polls while a job runs.
        counted = not is_bulk()
        try:
            self._admit(scope, counted)
        except ServiceError as refusal:
            await _refuse(refusal, scope, receive, send)
            return
        if scope["path"] in OPERATIONS:
            await self.app(scope, receive, send)
            return
        self.active += counted
        try:
            await self._serve(scope, receive, send)
        finally:
            self.active -= counted

    def _admit(self, scope: Scope, counted: bool) -> None:
        path = scope["path"]
        if self.registry.draining and path not in OPERATIONS:
            raise Unavailable(
                "the service is shutting down; retry on another replica",
                code="shutting_down",
                headers={"Connection": "close"},
            )
        if (
            self.keys
            and not self._public(scope)
            and not key_matches(bearer_token(scope), self.keys)
        ):
            raise Unauthorized(
                "a valid API key is required: Authorization: Bearer KEY",
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = declared_length(scope)
        limit = self.limit_for(path)
        if length is not None and length > limit:
            raise too_large(length, limit)
        if path not in OPERATIONS and counted and self.active >= self.max_concurrent:
            raise Overloaded(
                f"{self.active} requests are being served, the limit; try again shortly",
                code="too_many_requests",
                headers={"Retry-After": "1"},
            )

    def _public(self, scope: Scope) -> bool:
        method, path = scope["method"], scope["path"]
        prefix, methods = PAGE_FILES
        page_file = self.page_files and method in methods and path.startswith(prefix)
        return page_file or (method, path) in self.without_key

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if declared_length(scope) is None and scope["method"] in ("POST", "PUT", "PATCH"):
            limit = self.limit_for(scope["path"])
            messages, size = await read_body(receive, limit)
            if messages is None:
                await _refuse(too_large(size, limit, at_least=True), scope, receive, send)
                return
            receive = replaying(messages, receive)
        await self.app(scope, receive, send)

    def limit_for(self, path: str) -> int:
        return self.route_limits.get(path, self.max_body)


def too_large(size: int, limit: int, *, at_least: bool = False) -> PayloadTooLarge:
    more = "at least " if at_least else ""
    return PayloadTooLarge(
        f"request body of {more}{size} bytes is over the limit of {limit} bytes",
        code="request_too_large",
        headers={"Connection": "close"},
    )


async def _refuse(error: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(
        scope, error.status, error.message, error.type, error.code, error.param, error.headers
    )
    await response(scope, receive, send)


def install(app: FastAPI, settings: Settings, registry: ModelRegistry) -> None:
    """Add the guard, and CORS outside it (preflights need no key) when origins are set."""
    app.add_middleware(Guard, settings=settings, registry=registry)
    if settings.cors_origins:
        exposed = ["x-request-id", "x-total-time-ms", *(f"x-{p}-time-ms" for p in PHASES)]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=exposed,
        )

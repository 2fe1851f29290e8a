"""Rendering errors: every error reaches the client in OpenAI's envelope, with the status
from the error's class; unexpected exceptions become a generic 500 that names the request
id and nothing else (their traceback goes to the log).

Requests to text-embeddings-inference's routes get the same errors, statuses included, in
TEI's own shape ``{"error": message, "error_type": ...}``, which its clients read
(huggingface_hub shows the ``error`` field): POST /embed, /embed_sparse, /embed_all,
/tokenize, /decode and /, GET /info, and POST /rerank with a TEI body (``texts``)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Scope

from service.errors import ServiceError

log = logging.getLogger(__name__)

_HTTP_TYPES = {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_error"}
TEI_PATHS = frozenset({"/embed", "/embed_sparse", "/embed_all", "/tokenize", "/decode", "/info"})
_TEI_TYPES = {429: "Overloaded", 503: "Unhealthy"}  # else Validation, and Backend for 5xx


def envelope(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def tei_style(scope: Scope, body: object = None) -> bool:
    """The request is one of TEI's (by its path, the route's mark, or a TEI rerank body)."""
    if (scope.get("state") or {}).get("error_style") == "tei":
        return True
    path = scope.get("path", "")
    if path in TEI_PATHS or (path == "/" and scope.get("method") == "POST"):
        return True
    return (
        path == "/rerank" and isinstance(body, dict) and "texts" in body and "documents" not in body
    )


def error_response(
    scope: Scope,
    status: int,
    message: str,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    body: object = None,
) -> JSONResponse:
    """The error in the envelope the request's route speaks: OpenAI's, or TEI's."""
    if not tei_style(scope, body):
        return envelope(status, message, type_, code, param, headers)
    kind = _TEI_TYPES.get(status, "Backend" if status >= 500 else "Validation")
    return JSONResponse({"error": message, "error_type": kind}, status_code=status, headers=headers)


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    message = exc.message
    if exc.status >= 500:
        message = f"{message} (request id {request_id(request)})"
    return error_response(
        request.scope, exc.status, message, exc.type, exc.code, exc.param, exc.headers
    )


def _describe(error: dict[str, object]) -> tuple[str, str | None]:
    location = [str(part) for part in error.get("loc", ()) if part != "body"]  # type: ignore[attr-defined]
    param = location[0] if location else None
    where = ".".join(location) or "request body"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {message}", param


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    message, param = _describe(errors[0]) if errors else ("invalid request", None)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    return error_response(
        request.scope,
        400,
        message,
        "invalid_request_error",
        "invalid_request",
        param,
        body=exc.body,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(
        request.scope, exc.status_code, str(exc.detail), type_, code, None, headers
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    log.error(
        "unhandled error in %s %s (request id %s)",
        request.method,
        request.url.path,
        rid,
        exc_info=exc,
    )
    message = f"internal server error (request id {rid})"
    return error_response(request.scope, 500, message, "server_error", "internal_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

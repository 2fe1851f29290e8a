"""The OpenAPI document says what the service really answers: every error in the one envelope
(TEI's own on TEI's routes) with the statuses each route can give (FastAPI's default 422 is
never sent: validation errors are 400), and /metrics as Prometheus text. Clients and fuzzers
rely on it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.front.http.errors import TEI_PATHS
from service.front.http.guard import OPERATIONS, PROBES

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
TEI_ERROR_SCHEMA: dict[str, Any] = {
    "title": "TeiErrorResponse",
    "type": "object",
    "required": ["error", "error_type"],
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
}
TEI_ERROR_REF = {"$ref": "#/components/schemas/TeiErrorResponse"}
DESCRIPTIONS = {
    "400": "Invalid request",
    "401": "Missing or wrong API key",
    "404": "Model not found",
    "413": "Request body or input too large",
    "415": "Unsupported media type",
    "429": "Too many requests or a full queue (see Retry-After)",
    "500": "Internal error (the message carries the request id)",
    "503": "Not ready, shutting down, or inference timed out",
}


def error_statuses(path: str, method: str) -> list[str]:
    statuses = ["400", "413", "500"]
    if (method.upper(), path) not in PROBES:
        statuses.append("401")
    if path not in OPERATIONS:
        statuses += ["429", "503"]
    if method == "post":
        statuses += ["404", "415"]
    elif path == "/info" or "{" in path:  # ?model= names a model; an id in the path
        statuses.append("404")
    return sorted(statuses)


def error_ref(path: str, method: str) -> dict[str, Any]:
    """TEI's routes answer errors in TEI's shape; POST /rerank in either (by its body)."""
    if path in TEI_PATHS or (path == "/" and method == "post"):
        return TEI_ERROR_REF
    if path == "/rerank":
        return {"oneOf": [ERROR_REF, TEI_ERROR_REF]}
    return ERROR_REF


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ERROR_SCHEMA
    schemas["TeiErrorResponse"] = TEI_ERROR_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in error_statuses(path, method):
                responses.setdefault(
                    status,
                    {
                        "description": DESCRIPTIONS[status],
                        "content": {"application/json": {"schema": error_ref(path, method)}},
                    },
                )
    ready = schema.get("paths", {}).get("/ready", {}).get("get")
    if ready is not None:
        ready["responses"]["503"] = {
            "description": "Not ready: loading, failed, a worker down, or shutting down",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    metrics = schema.get("paths", {}).get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override

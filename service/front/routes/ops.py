"""Operations routes: liveness, readiness, Prometheus metrics, and what is served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.cache.setup import cache_state
from service.front.shared import deps
from service.models.loaded import LoadedModel

router = APIRouter(tags=["Operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (it may still be loading models)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 once every configured model is loaded, warmed and its worker alive; else 503."""
    registry = deps.registry(request)
    body: dict[str, Any] = {
        "status": "ready" if registry.ready else "not_ready",
        "models": {name: _state(m) for name, m in registry.models.items()},
        "expected_models": registry.expected,
        "cache": cache_state(registry.cache),  # a shared layer that went away: uncached
    }
    if registry.draining:
        body["reason"] = "shutting down"
    elif registry.error:
        body["reason"] = registry.error
    return JSONResponse(body, status_code=200 if registry.ready else 503)


def _state(model: LoadedModel) -> dict[str, Any]:
    alive = model.batcher is None or model.batcher.alive
    return {
        "provider": model.provider,
        "variant": model.variant,
        "exact": model.exact,
        "sessions": len(model.session_threads),  # replicas, or adaptive (docs/scaling.md)
        "session_threads": list(model.session_threads),
        "worker_alive": alive,
    }


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def describe(model: LoadedModel) -> dict[str, Any]:
    spec = model.spec
    return {
        "name": spec.name,
        "kind": spec.kind,
        "dim": spec.dim,
        "max_tokens": spec.max_length,
        "fastembed_max_tokens": spec.limit_of("fastembed"),
        "token_limit": spec.token_limit,
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "query_prefix": spec.query_prefix,
        "document_prefix": spec.document_prefix,
        "provider": model.provider,
        "variant": model.variant,
        "exact": model.exact,
        "batch_invariant": model.batch_invariant,
        "variant_check": model.variant_check,
        "license": spec.license,
    }


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    """Every served model with its kind, dimension, max tokens and pooling."""
    return {"models": [describe(m) for m in deps.registry(request).models.values()]}


@router.get("/v1/models", tags=["OpenAI"])
async def openai_models(request: Request) -> dict[str, Any]:
    """OpenAI's model list."""
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": name.split("/")[0]}
        for name in deps.registry(request).models
    ]
    return {"object": "list", "data": data}

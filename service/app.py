"""The FastAPI application: routers, error rendering, middleware and the models' lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI

from service.bulk import router as bulk_router
from service.bulk.jobs import BulkService
from service.cache.setup import build_cache
from service.engine.loading import start_loading, stop_all
from service.front.engine_link import EngineLink
from service.front.http import errors, guard, openapi
from service.front.http.json_routes import JsonRoutes, json_routes
from service.front.http.middleware import RequestContext
from service.front.routes import (
    cohere,
    dense,
    image,
    late,
    multimodal,
    ops,
    page,
    rerank,
    sparse,
    tei,
)
from service.front.shared.deps import ClientGone, client_gone_response
from service.models.registry import ModelRegistry
from service.ops.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)

# Included without a prefix or dependencies, as the JSON routes' short path requires.
ROUTERS = (
    dense.router,
    late.router,
    rerank.router,
    image.router,
    multimodal.router,
    ops.router,
    sparse.router,
    cohere.router,
    tei.router,
)


def create_app(
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
    engine_socket: str | None = None,
    wait_for_engine: bool = False,
    before_listening: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """Build the app. In one process (the default) the models load in the background after
    start-up (GET /ready says when) and the engine runs in this process; with `engine_socket`
    (a request-handling process of the multi-process mode) the models are the engine
    process's, reached through that socket; `wait_for_engine` holds the start-up (and so the
    listening) until they are ready here, then `before_listening` until it returns.
    Tests may pass a registry already filled."""
    settings = settings or Settings()
    metrics = Metrics()
    preloaded = registry is not None
    registry = registry or ModelRegistry()
    registry.cache = build_cache(settings, metrics)
    for model in registry.models.values():
        model.cache = model.cache or registry.cache

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if engine_socket is not None:
            link = EngineLink(engine_socket, registry, metrics, settings.request_timeout_s)
            task = asyncio.create_task(link.run())
            if wait_for_engine:
                await link.serving.wait()
            if before_listening is not None:
                await before_listening()
        elif not preloaded:
            task = start_loading(registry, settings, metrics)
        if settings.batch_api:
            app.state.bulk.start()
        try:
            yield
        finally:
            registry.draining = True
            if settings.batch_api:
                await app.state.bulk.stop()
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await stop_all(registry)
            if registry.cache is not None:
                registry.cache.close()

    app = FastAPI(
        title="Embedding service",
        version="0.1.0",
        description="Dense, sparse, late-interaction and image embeddings, and reranking.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    errors.install(app)
    app.add_exception_handler(ClientGone, client_gone_response)
    for router in ROUTERS:
        app.include_router(router)
    if settings.batch_api:
        app.state.bulk = BulkService(app, settings, registry, metrics)
        app.include_router(bulk_router.router)
    if settings.ui:
        page.install(app)  # GET / and /ui/: not a JSON route
    if settings.json_short_path:
        app.add_middleware(JsonRoutes, routes=json_routes(ROUTERS))  # inside the guard
    guard.install(app, settings, registry)
    openapi.install(app)
    app.add_middleware(RequestContext, metrics=metrics)
    return app

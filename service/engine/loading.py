"""Loading the configured models into the engine: files, sessions, warm-up and batchers."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from service.engine import openvino_runner, scaling
from service.engine.batcher import Batcher
from service.engine.openvino_runner import OpenVinoRunner, is_openvino_graph
from service.engine.runner import CPU, CUDA, OnnxRunner, SharedWeights, choose_provider
from service.engine.weights import Unreadable, read_initializers
from service.errors import ModelLoadError
from service.models.catalogue import ModelSpec, load_catalogue
from service.models.kinds.registry import KIND_HANDLERS, handler_for
from service.models.loaded import GraphRunner, LoadedModel, open_model
from service.models.registry import ModelRegistry
from service.models.store import (
    HubOptions,
    model_directory,
    resolve_reference,
    split_variant,
    variant_check,
    with_variant,
)
from service.ops.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


def hub_options(settings: Settings) -> HubOptions:
    return HubOptions(
        cache_dir=settings.cache_dir, offline=settings.offline, token=settings.hf_token
    )


def shared_weights(graph: Path) -> SharedWeights | None:
    """The graph's weights, once, for adaptive sessions; None (plain sessions) when they are
    not in a layout service/engine/weights.py reads."""
    try:
        weights = SharedWeights(read_initializers(graph))
    except Unreadable as exc:
        log.warning("adaptive sessions off for %s: %s", graph, exc)
        return None
    log.info("adaptive sessions share %.0f MiB of weights of %s", weights.nbytes / 2**20, graph)
    return weights


def load_model(
    spec: ModelSpec, settings: Settings, hub: HubOptions, variant: str | None = None
) -> LoadedModel:
    """Fetch, load and warm one model (blocking: call it in a thread). `variant` is the
    model's own choice of graph (``NAME:int8``), else the graph_variant setting."""
    if spec.kind not in KIND_HANDLERS:
        raise ModelLoadError(f"model {spec.name!r}: kind {spec.kind!r} is not served yet")
    handler = handler_for(spec)
    directory = model_directory(spec, hub, handler.extra_files)
    chosen = "original"
    provider = ""
    if handler.needs_session:
        provider = choose_provider(settings.execution_provider)
        spec, chosen = with_variant(
            spec, directory, variant or settings.graph_variant, provider == CUDA
        )
    model = open_model(spec, directory, handler)
    model.variant = chosen
    model.variant_check = variant_check(directory, chosen)
    if handler.needs_session:
        add_sessions(model, settings, provider)
    elif handler.runner is not None:
        model.runners = [handler.runner(model)]
        model.provider = "numpy"
    log.info("loaded %s (%s) from %s on %s", spec.name, model.variant, directory, model.provider)
    return model


def add_sessions(model: LoadedModel, settings: Settings, provider: str) -> None:
    """The model's sessions (replicas or adaptive), warmed up: ONNX Runtime's, or OpenVINO's
    for a graph in its IR."""
    graph = model.directory / model.spec.source.model_file
    layout, model.solo = scaling.session_layout(settings, provider, model.spec.kind)
    if is_openvino_graph(graph):  # OpenVINO IR: one compiled model per entry of the layout
        if provider == CUDA:
            raise ModelLoadError(f"{graph} is an OpenVINO graph for the CPU, not for CUDA")
        model.runners = [OpenVinoRunner(graph, threads=threads) for threads in layout]
        provider = openvino_runner.PROVIDER
    else:
        layout = add_onnx_runners(model, settings, provider, graph, layout)
    model.provider = provider
    model.session_threads = tuple(layout)
    warm = [payload for _, payload in model.handler.warmup(model)]
    for worker in range(len(model.runners)):
        model.process(worker, warm)
    scaling.configure(model, settings)


def cpu_runner(graph: Path, threads: int) -> GraphRunner:
    """A plain CPU session of any graph the service serves: ONNX, or OpenVINO IR."""
    if is_openvino_graph(graph):
        return OpenVinoRunner(graph, threads=threads)
    return OnnxRunner(graph, provider=CPU, threads=threads)


def add_onnx_runners(
    model: LoadedModel, settings: Settings, provider: str, graph: Path, layout: list[int]
) -> list[int]:
    """ONNX Runtime sessions, one per entry of the layout; the layout they took: a solo
    (adaptive) layout whose graph cannot share its weights falls back to its first session."""
    weights = shared_weights(graph) if model.solo else None
    if model.solo and weights is None:
        layout, model.solo = layout[:1], False
    model.runners = [
        OnnxRunner(
            graph,
            provider=provider,
            threads=threads,
            spinning=settings.ort_spinning,
            optimization=settings.ort_graph_optimization,
            memory_arena=settings.ort_memory_arena,
            weights=weights,
        )
        for threads in layout
    ]
    return layout


def with_token_limit(spec: ModelSpec, settings: Settings) -> ModelSpec:
    """The spec cutting inputs at FastEmbed's limit by default where the setting names it."""
    if spec.name in settings.fastembed_limits or "*" in settings.fastembed_limits:
        return replace(spec, token_limit="fastembed")
    return spec


def check_limit_names(settings: Settings, served: set[str]) -> None:
    unknown = set(settings.fastembed_limits) - served - {"*"}
    if unknown:
        raise ModelLoadError(
            f"EMBED_FASTEMBED_LIMITS names models that are not served: {sorted(unknown)}"
        )


def start_loading(
    registry: ModelRegistry, settings: Settings, metrics: Metrics
) -> asyncio.Task[None]:
    """Load every configured model in the background. The registry knows at once how many
    are coming, so nothing reads it as ready before the task's first step (an engine process
    that reported "ready, none expected" in that instant let a request-handling process
    started --when-ready listen with no model)."""
    registry.expected = len(settings.models)
    return asyncio.create_task(load_all(registry, settings, metrics))


async def load_all(registry: ModelRegistry, settings: Settings, metrics: Metrics) -> None:
    """Load every configured model with its batcher; on failure keep /ready at 503 and say
    why (``registry.error``)."""
    registry.expected = len(settings.models)
    try:
        catalogue = load_catalogue(settings.catalogue_files)
        hub = hub_options(settings)
        references = [split_variant(reference) for reference in settings.models]
        specs = [(resolve_reference(name, catalogue), variant) for name, variant in references]
        check_limit_names(settings, {spec.name for spec, _ in specs})
        for resolved, variant in specs:
            spec = with_token_limit(resolved, settings)
            model = await asyncio.to_thread(load_model, spec, settings, hub, variant)
            if model.runners:
                batcher = Batcher(
                    model.name,
                    model.process,
                    workers=len(model.runners),
                    solo=model.solo,
                    config=scaling.batch_config(settings, model.provider, model.spec.kind),
                    observer=metrics.observer(model.name),
                )
                batcher.start()
                model.batcher = batcher
            registry.add(model)
    except ModelLoadError as exc:
        registry.error = str(exc)
        log.error("model loading failed: %s", exc)
    except Exception as exc:
        registry.error = f"unexpected error while loading models: {type(exc).__name__}"
        log.exception("model loading failed")


async def stop_all(registry: ModelRegistry) -> None:
    """Stop every batcher: queued requests get 503, running batches finish."""
    for model in registry.models.values():
        if isinstance(model.batcher, Batcher):
            await model.batcher.stop()

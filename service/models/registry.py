"""Loading the configured models at start-up, and finding a served model by name."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from service.engine import scaling
from service.engine.batcher import BatchConfig, Batcher
from service.engine.runner import CPU, CUDA, OnnxRunner, SharedWeights, choose_provider
from service.engine.weights import Unreadable, read_initializers
from service.errors import InvalidInput, ModelLoadError, ModelNotFound
from service.models.catalogue import ModelSpec, load_catalogue
from service.models.kinds import KIND_HANDLERS, handler_for
from service.models.loaded import LoadedModel
from service.models.store import HubOptions, model_directory, resolve_reference, with_variant
from service.models.text import load_text_encoder
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


def load_model(spec: ModelSpec, settings: Settings, hub: HubOptions) -> LoadedModel:
    """Fetch, load and warm one model (blocking: call it in a thread)."""
    if spec.kind not in KIND_HANDLERS:
        raise ModelLoadError(f"model {spec.name!r}: kind {spec.kind!r} is not served yet")
    handler = handler_for(spec)
    directory = model_directory(spec, hub, handler.extra_files)
    model = LoadedModel(spec=spec, directory=directory, handler=handler)
    if handler.needs_session:
        provider = choose_provider(settings.execution_provider)
        spec, model.variant = with_variant(
            spec, directory, settings.graph_variant, provider == CUDA
        )
        model.spec = spec
        graph = directory / spec.source.model_file
        layout, model.solo = scaling.session_layout(settings, provider, spec.kind)
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
    if handler.needs_text:
        model.text = load_text_encoder(directory, spec.max_length)
    if handler.load_resources is not None:
        model.resources = handler.load_resources(spec, directory)
    if handler.needs_session:
        warm = [payload for _, payload in handler.warmup(model)]
        for worker in range(len(model.runners)):
            model.process(worker, warm)
        scaling.configure(model, settings)
    log.info("loaded %s (%s) from %s on %s", spec.name, model.variant, directory, model.provider)
    return model


def batch_config(settings: Settings, provider: str = CPU, kind: str = "dense") -> BatchConfig:
    return scaling.batch_config(settings, provider, kind)


@dataclass
class ModelRegistry:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    expected: int = 0
    error: str | None = None
    draining: bool = False

    def add(self, model: LoadedModel) -> None:
        self.models[model.name] = model

    @property
    def ready(self) -> bool:
        return (
            not self.draining
            and self.error is None
            and len(self.models) == self.expected
            and all(m.batcher is None or m.batcher.alive for m in self.models.values())
        )

    def get(self, name: str | None, kinds: tuple[str, ...]) -> LoadedModel:
        """The served model called `name` (or its last path part), or the first of `kinds`."""
        if name is None or name == "":
            for model in self.models.values():
                if model.spec.kind in kinds:
                    return model
            raise ModelNotFound(f"no {' or '.join(kinds)} model is served", param="model")
        found = self.models.get(name) or self._by_short_name(name)
        if found is None:
            served = ", ".join(sorted(self.models)) or "none yet"
            raise ModelNotFound(f"model {name!r} is not served (served: {served})", param="model")
        if found.spec.kind not in kinds:
            raise InvalidInput(
                f"model {name!r} is a {found.spec.kind} model; this route takes "
                f"{' or '.join(kinds)} models",
                param="model",
            )
        return found

    def _by_short_name(self, name: str) -> LoadedModel | None:
        matches = [m for m in self.models.values() if m.name.rsplit("/", 1)[-1] == name]
        return matches[0] if len(matches) == 1 else None

    async def load_all(self, settings: Settings, metrics: Metrics) -> None:
        """Load every configured model; on failure keep /ready at 503 and say why."""
        self.expected = len(settings.models)
        try:
            catalogue = load_catalogue(settings.catalogue_files)
            specs = [resolve_reference(ref, catalogue) for ref in settings.models]
            hub = hub_options(settings)
            for spec in specs:
                model = await asyncio.to_thread(load_model, spec, settings, hub)
                if model.runners:
                    model.batcher = Batcher(
                        model.name,
                        model.process,
                        workers=len(model.runners),
                        solo=model.solo,
                        config=scaling.batch_config(settings, model.provider, model.spec.kind),
                        observer=metrics.observer(model.name),
                    )
                    model.batcher.start()
                self.add(model)
        except ModelLoadError as exc:
            self.error = str(exc)
            log.error("model loading failed: %s", exc)
        except Exception as exc:
            self.error = f"unexpected error while loading models: {type(exc).__name__}"
            log.exception("model loading failed")

    async def stop(self) -> None:
        for model in self.models.values():
            if model.batcher is not None:
                await model.batcher.stop()

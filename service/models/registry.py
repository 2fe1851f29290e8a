"""The served models by name: what every process finds a model in, and whether all of them
are ready. The engine fills it by loading (service/engine/loading.py); a request-handling
process of the multi-process mode fills it from the engine's status
(service/front/engine_link.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.errors import InvalidInput, ModelNotFound
from service.models.loaded import LoadedModel


@dataclass
class ModelRegistry:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    expected: int = 0
    error: str | None = None
    draining: bool = False
    # In a request-handling process of the multi-process mode: whether the engine process is
    # connected and says every model is ready (service/front/engine_link.py).
    engine_ready: bool = True
    # The result cache of a process that serves requests, given to each model (service/cache).
    cache: Any = None

    def add(self, model: LoadedModel) -> None:
        if model.cache is None:
            model.cache = self.cache
        self.models[model.name] = model

    @property
    def ready(self) -> bool:
        return (
            not self.draining
            and self.engine_ready
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
        found = self._by_alias(name, kinds) or self.models.get(name) or self._by_short_name(name)
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

    def encoder_for(self, model: LoadedModel, input_type: str | None) -> LoadedModel:
        """The model that embeds `input_type` inputs for `model`: for queries, the first served
        model of its options.query_encoders (stella's constella encoders), else itself."""
        if input_type == "query":
            for name in model.spec.options.get("query_encoders", ()):
                encoder = self.models.get(name)
                if encoder is not None and encoder.spec.kind == model.spec.kind:
                    return encoder
        return model

    def _by_alias(self, name: str, kinds: tuple[str, ...]) -> LoadedModel | None:
        """A served model of the route's kinds known by `name` too (catalogue aliases), which
        wins over a served model of another kind that has that name."""
        own = self.models.get(name)
        if own is not None and own.spec.kind in kinds:
            return own
        matches = [
            m for m in self.models.values() if m.spec.kind in kinds and name in m.spec.aliases
        ]
        return matches[0] if len(matches) == 1 else None

    def _by_short_name(self, name: str) -> LoadedModel | None:
        matches = [m for m in self.models.values() if m.name.rsplit("/", 1)[-1] == name]
        return matches[0] if len(matches) == 1 else None

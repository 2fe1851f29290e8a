"""A model ready to serve: its spec, files, tokenizer, sessions and batcher."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.engine.runner import OnnxRunner
from service.errors import InferenceFailed
from service.models.catalogue import ModelSpec
from service.models.text import TextEncoder

if TYPE_CHECKING:
    from service.engine.batcher import Batcher
    from service.models.kinds import KindHandler


@dataclass
class LoadedModel:
    spec: ModelSpec
    directory: Path
    handler: KindHandler
    text: TextEncoder | None = None
    runners: list[OnnxRunner] = field(default_factory=list)
    solo: bool = False  # adaptive sessions: runners[0] on all threads, the rest on one each
    resources: Any = None
    variant: str = "original"
    batcher: Batcher | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def provider(self) -> str:
        return self.runners[0].provider if self.runners else "none"

    @property
    def encoder(self) -> TextEncoder:
        if self.text is None:
            raise RuntimeError(f"model {self.name} has no tokenizer")
        return self.text

    def process(self, worker: int, payloads: Sequence[Any]) -> Sequence[Any]:
        """Run one batch on session `worker`: collate, infer, post-process (a worker thread)."""
        feeds = self.handler.collate(self, payloads)
        for name, value in self.spec.options.get("constant_inputs", {}).items():
            feeds[name] = np.asarray(value, dtype=np.int64)
        outputs = self.runners[worker].run(feeds)
        for output in outputs:
            if output.dtype.kind == "f" and not np.isfinite(output).all():
                raise InferenceFailed(
                    f"model {self.name!r} produced NaN or infinite values for this batch"
                )
        return self.handler.postprocess(self, outputs, feeds, payloads)

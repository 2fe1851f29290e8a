"""Per-kind behaviour as data: a registry from kind name to a small bundle of functions.

A kind says how a batch of prepared payloads becomes graph feeds (``collate``), how graph
outputs become one result per payload (``postprocess``), and what to run at start-up to
warm the session (``warmup``). Request-side preparation (tokenization with the kind's rules)
lives next to these functions and is called by the serving layer before queueing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.models.catalogue import ModelSpec

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

Feeds = dict[str, npt.NDArray[Any]]
Collate = Callable[["LoadedModel", Sequence[Any]], Feeds]
Postprocess = Callable[["LoadedModel", list[npt.NDArray[Any]], Feeds, Sequence[Any]], Sequence[Any]]
Warmup = Callable[["LoadedModel"], list[tuple[int, Any]]]
LoadResources = Callable[[ModelSpec, Path], Any]


@dataclass(frozen=True)
class KindHandler:
    collate: Collate
    postprocess: Postprocess
    warmup: Warmup
    needs_text: bool = True
    needs_session: bool = True
    load_resources: LoadResources | None = None
    extra_files: tuple[str, ...] = ()


def _registry() -> dict[str, KindHandler]:
    from service.models.kinds import bm25, bm42, dense, image, late, multimodal, rerank, sparse

    return {
        "dense": dense.HANDLER,
        "late": late.HANDLER,
        "rerank": rerank.HANDLER,
        "sparse": sparse.HANDLER,
        "sparse/bm25": bm25.HANDLER,
        "sparse/bm42": bm42.HANDLER,
        "image": image.HANDLER,
        "multimodal": multimodal.HANDLER,
    }


KIND_HANDLERS: dict[str, KindHandler] = _registry()


def handler_for(spec: ModelSpec) -> KindHandler:
    """The kind's handler, or a family's (``kind/options.family``) where one is registered."""
    family = f"{spec.kind}/{spec.options.get('family', '')}"
    return KIND_HANDLERS.get(family) or KIND_HANDLERS[spec.kind]


def no_resources(spec: ModelSpec, directory: Path) -> None:
    return None


def as_float32(array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(array, dtype=np.float32)

"""What a kind provides: how a batch of prepared payloads becomes graph feeds (``collate``),
how graph outputs become one result per payload (``postprocess``), what to run at start-up to
warm the session (``warmup``), and what the model directory must hold. Each kind module
builds one ``KindHandler``; registry.py maps kind names to them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.models.catalogue import ModelSpec

if TYPE_CHECKING:
    from service.models.kinds.multimodal import Sides
    from service.models.loaded import LoadedModel, Runner

Feeds = dict[str, npt.NDArray[Any]]
Collate = Callable[["LoadedModel", Sequence[Any]], Feeds]
Postprocess = Callable[["LoadedModel", list[npt.NDArray[Any]], Feeds, Sequence[Any]], Sequence[Any]]
Warmup = Callable[["LoadedModel"], list[tuple[int, Any]]]
LoadResources = Callable[[ModelSpec, Path], Any]
MakeRunner = Callable[["LoadedModel"], "Runner"]


@dataclass(frozen=True)
class KindHandler:
    collate: Collate
    postprocess: Postprocess
    warmup: Warmup
    needs_text: bool = True
    needs_session: bool = True
    load_resources: LoadResources | None = None
    extra_files: tuple[str, ...] = ()
    # Computes the model without ONNX Runtime (a static model's token table): its runner
    # stands in for the session in the model's batcher.
    runner: MakeRunner | None = None
    special_tokens: bool = True  # the tokenizer's [CLS]/[SEP] around each text
    # A family whose items carry more than their text (miniCOIL's: query or document): how a
    # request's texts become the batcher's items, in place of the kind's own preparation.
    prepare_texts: Callable[..., list[tuple[int, Any]]] | None = None
    # Queries computed without the graph (BM42: 1 a stem; inference-free SPLADE: IDF).
    query_vectors: Callable[[LoadedModel, Sequence[Any]], list[Any]] | None = None
    # A multimodal family's request sides, queries and page images (kinds/multimodal.Sides).
    sides: Sides | None = None


def output_index(model: LoadedModel, chosen: int | str) -> int:
    """A graph output by index, or by name (SigLIP's `pooler_output`)."""
    if isinstance(chosen, str) and not chosen.isdigit():
        return model.runners[0].output_names.index(chosen)
    return int(chosen)


def no_resources(spec: ModelSpec, directory: Path) -> None:
    return None


def as_float32(array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(array, dtype=np.float32)

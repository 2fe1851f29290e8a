"""Dense embedding logic shared by /embed/dense and /v1/embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.front.shared.batched import submit_counted
from service.models.catalogue import TokenLimit
from service.models.kinds.dense import Vectors, l2_normalize, prepare_ids, prepare_texts
from service.models.kinds.encoded import InputType
from service.models.kinds.m3 import wanting
from service.models.loaded import LoadedModel
from service.models.text import Encoded


@dataclass(frozen=True)
class DenseResult:
    vectors: Vectors  # (n, dim) float32
    tokens: int


async def embed(
    model: LoadedModel,
    inputs: Sequence[str] | Sequence[Sequence[int]],
    *,
    input_type: InputType | None,
    truncate: bool,
    limit: TokenLimit | None = None,
) -> DenseResult:
    """Embed texts (or pre-tokenized ids) through the model's batcher; raw pooled vectors."""

    def prepare() -> list[tuple[int, Encoded]]:
        if inputs and not isinstance(inputs[0], str):
            ids = [[int(token) for token in item] for item in inputs]
            return prepare_ids(model, ids, truncate, limit)
        return prepare_texts(model, [str(t) for t in inputs], input_type, truncate, limit)

    def prepare_wanted() -> list[tuple[int, Any]]:
        return wanting(model, prepare(), "dense")  # BGE-M3: its dense output only

    vectors, tokens = await submit_counted(model, prepare_wanted)
    return DenseResult(np.stack(vectors) if vectors else _empty(model), tokens)


def _empty(model: LoadedModel) -> Vectors:
    return np.zeros((0, model.spec.dim or 0), dtype=np.float32)


def shape_vectors(
    vectors: Vectors, *, normalize: bool, dimensions: int | None, dim: int | None
) -> Vectors:
    """Apply the request's options: Matryoshka-style truncation (then renormalise, as OpenAI
    does) and L2 normalisation."""
    if dimensions is not None:
        if dimensions < 1 or (dim is not None and dimensions > dim):
            raise InvalidInput(
                f"dimensions must be between 1 and the model's {dim}, got {dimensions}",
                param="dimensions",
            )
        vectors = vectors[:, :dimensions]
        normalize = True
    return l2_normalize(vectors) if normalize else vectors

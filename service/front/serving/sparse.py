"""Sparse embedding logic: SPLADE, BM42 and miniCOIL documents (and miniCOIL queries) go
through the model's batcher; BM25, BM42 and inference-free SPLADE queries need no inference and
run in a worker thread."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.front.shared.batched import lengths, submit_counted
from service.models.catalogue import TokenLimit
from service.models.kinds import bm25
from service.models.kinds.encoded import InputType
from service.models.kinds.m3 import wanting
from service.models.kinds.sparse import SparseVector, family, prepare_texts
from service.models.loaded import LoadedModel

EMPTY = SparseVector(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


@dataclass(frozen=True)
class Cut:
    """Whether over-long inputs are cut (else refused), and at which limit."""

    truncate: bool
    limit: TokenLimit | None


@dataclass(frozen=True)
class SparseResult:
    vectors: list[SparseVector]
    tokens: int


def check_language(model: LoadedModel, language: str | None) -> None:
    if language is None:
        return
    if family(model) != "bm25":
        raise InvalidInput(
            f"language applies to BM25 models only; {model.name!r} is a {family(model)} model",
            param="language",
        )
    bm25.check_language(language)


async def embed_sparse(
    model: LoadedModel,
    texts: Sequence[str],
    *,
    input_type: InputType,
    truncate: bool,
    language: str | None = None,
    limit: TokenLimit | None = None,
) -> SparseResult:
    """Sparse vectors for `texts`, in order; an empty string gets an empty vector."""
    check_language(model, language)
    kept = [i for i, text in enumerate(texts) if text]
    cut = Cut(truncate, limit)
    result = await _embed_non_empty(model, [texts[i] for i in kept], input_type, cut, language)
    vectors = [EMPTY] * len(texts)
    for index, vector in zip(kept, result.vectors, strict=True):
        vectors[index] = vector
    return SparseResult(vectors, result.tokens)


async def _embed_non_empty(
    model: LoadedModel,
    texts: list[str],
    input_type: InputType,
    cut: Cut,
    language: str | None,
) -> SparseResult:
    if not texts:
        return SparseResult([], 0)
    kind = family(model)
    if kind == "bm25":
        vectors = await asyncio.to_thread(bm25.embed, model, texts, input_type, language)
        return SparseResult(vectors, sum(len(bm25.words(text)) for text in texts))
    encode = model.handler.query_vectors
    if encode is not None and input_type == "query":
        counted: list[int] = []

        def queries() -> list[SparseVector]:
            items = prepare_texts(model, texts, input_type, cut.truncate, cut.limit)
            counted.append(lengths(items))
            return encode(model, [encoded for _, encoded in items])

        vectors = await asyncio.to_thread(queries)
        return SparseResult(vectors, counted[0])

    vectors, tokens = await submit_counted(model, lambda: _items(model, texts, input_type, cut))
    return SparseResult(vectors, tokens)


def _items(
    model: LoadedModel, texts: list[str], input_type: InputType, cut: Cut
) -> list[tuple[int, Any]]:
    """The batcher's items: miniCOIL's carry their side; a BGE-M3 model's the output wanted."""
    prepare = model.handler.prepare_texts
    if prepare is not None:
        return prepare(model, texts, input_type, cut.truncate, cut.limit)
    items = prepare_texts(model, texts, input_type, cut.truncate, cut.limit)
    return wanting(model, items, "sparse")


def render(vector: SparseVector, with_tokens: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"indices": vector.indices, "values": vector.values}
    if with_tokens:
        body["tokens"] = list(vector.tokens)
    return body

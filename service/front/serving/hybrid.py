"""Hybrid embeddings: one call, several models of any kinds, run concurrently; per input a
dict of named vectors ready to upsert into Qdrant (dense lists and sparse index/value pairs)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidInput
from service.front.http.encoding import encode_vectors
from service.front.serving.dense import embed as embed_dense
from service.front.serving.dense import shape_vectors
from service.front.serving.sparse import embed_sparse, render
from service.models.kinds.encoded import InputType
from service.models.loaded import LoadedModel


@dataclass(frozen=True)
class Member:
    name: str
    model: LoadedModel


@dataclass(frozen=True)
class HybridOptions:
    input_type: InputType
    truncate: bool
    language: str | None
    return_tokens: bool


def vector_names(models: Sequence[LoadedModel], asked: Sequence[str | None]) -> list[str]:
    """The asked name, else the model's kind when no other member has it, else its short name."""
    kinds = Counter(model.spec.kind for model in models)
    names = [
        given or (model.spec.kind if kinds[model.spec.kind] == 1 else model.name.rsplit("/", 1)[-1])
        for model, given in zip(models, asked, strict=True)
    ]
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise InvalidInput(
            f"vector names must be distinct; {repeated} name several members (give each a name)",
            param="models",
        )
    return names


async def _member_vectors(
    member: Member, texts: Sequence[str], options: HybridOptions
) -> tuple[list[Any], int]:
    model = member.model
    if model.spec.kind == "dense":
        result = await embed_dense(
            model, texts, input_type=options.input_type, truncate=options.truncate
        )
        vectors = shape_vectors(
            result.vectors, normalize=model.spec.normalize, dimensions=None, dim=model.spec.dim
        )
        return encode_vectors(vectors, "float"), result.tokens
    language = options.language if model.spec.options.get("family") == "bm25" else None
    sparse = await embed_sparse(
        model, texts, input_type=options.input_type, truncate=options.truncate, language=language
    )
    return [render(v, options.return_tokens) for v in sparse.vectors], sparse.tokens


async def embed_hybrid(
    members: Sequence[Member], texts: Sequence[str], options: HybridOptions
) -> tuple[list[dict[str, Any]], int]:
    """Every member's vectors for every text, members run concurrently; total tokens."""
    results = await asyncio.gather(*(_member_vectors(m, texts, options) for m in members))
    rows: list[dict[str, Any]] = [{} for _ in texts]
    for member, (vectors, _) in zip(members, results, strict=True):
        for row, vector in zip(rows, vectors, strict=True):
            row[member.name] = vector
    return rows, sum(tokens for _, tokens in results)

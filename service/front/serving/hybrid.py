"""Hybrid embeddings: one call, several models of any kinds, run concurrently; per input a
dict of named vectors ready to upsert into Qdrant (dense lists, sparse index/value pairs and
multi-vectors). A BGE-M3 member fills three of them from one run of its model."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidInput
from service.front.http.encoding import encode_vectors
from service.front.schemas.multivector import Compression
from service.front.serving.dense import embed as embed_dense
from service.front.serving.dense import shape_vectors
from service.front.serving.late import embed_late
from service.front.serving.multivector import compress, vector_value
from service.front.serving.sparse import embed_sparse, render
from service.front.shared.batched import submit_counted
from service.models.kinds import m3
from service.models.kinds.encoded import InputType
from service.models.kinds.m3 import is_m3
from service.models.loaded import LoadedModel
from service.models.multivector import Matrix


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
    compression: Compression | None = None  # of the multi-vectors


async def multi_vectors(matrices: list[Matrix], options: HybridOptions) -> list[Any]:
    """The late members' vectors, compressed as the request asks."""
    sides = [options.input_type] * len(matrices)
    return [vector_value(found) for found in await compress(matrices, options.compression, sides)]


def vector_names(models: Sequence[LoadedModel], asked: Sequence[str | None]) -> list[str]:
    """The asked name, else the model's kind when no other member has it, else its short name.
    A BGE-M3 member gives three vectors: its name (default: none) is their names' prefix."""
    kinds = Counter(model.spec.kind for model in models)
    names = [
        (given or "")
        if is_m3(model)
        else given or (model.spec.kind if kinds[model.spec.kind] == 1 else short_name(model))
        for model, given in zip(models, asked, strict=True)
    ]
    every = [n for m, name in zip(models, names, strict=True) for n in output_names(m, name)]
    repeated = sorted(name for name, count in Counter(every).items() if count > 1)
    if repeated:
        raise InvalidInput(
            f"vector names must be distinct; {repeated} name several members (give each a name)",
            param="models",
        )
    return names


def short_name(model: LoadedModel) -> str:
    return model.name.rsplit("/", 1)[-1]


def output_names(model: LoadedModel, name: str) -> list[str]:
    """The vector names a member fills: its own, or a BGE-M3 member's three."""
    if is_m3(model):
        return [f"{name}-{output}" if name else output for output in m3.OUTPUTS]
    return [name]


Rows = list[dict[str, Any]]  # per text, vector name -> vector


async def _member_vectors(
    member: Member, texts: Sequence[str], options: HybridOptions
) -> tuple[Rows, int]:
    model = member.model
    if is_m3(model):
        return await _m3_vectors(member, texts, options)
    if model.spec.kind == "late":
        queries = list(texts) if options.input_type == "query" else []
        documents = [] if queries else list(texts)
        late = await embed_late(model, queries, documents, truncate=options.truncate)
        matrices = await multi_vectors(late.matrices, options)
        return [{member.name: matrix} for matrix in matrices], late.tokens
    if model.spec.kind == "dense":
        result = await embed_dense(
            model, texts, input_type=options.input_type, truncate=options.truncate
        )
        vectors = shape_vectors(
            result.vectors, normalize=model.spec.normalize, dimensions=None, dim=model.spec.dim
        )
        return [{member.name: v} for v in encode_vectors(vectors, "float")], result.tokens
    language = options.language if model.spec.options.get("family") == "bm25" else None
    sparse = await embed_sparse(
        model, texts, input_type=options.input_type, truncate=options.truncate, language=language
    )
    rendered = [{member.name: render(v, options.return_tokens)} for v in sparse.vectors]
    return rendered, sparse.tokens


async def _m3_vectors(
    member: Member, texts: Sequence[str], options: HybridOptions
) -> tuple[Rows, int]:
    """BGE-M3's dense, sparse and ColBERT vectors of every text from one run of the model."""
    model = member.model
    results, tokens = await submit_counted(
        model, lambda: m3.prepare(model, texts, m3.OUTPUTS, options.truncate)
    )
    names = dict(zip(m3.OUTPUTS, output_names(model, member.name), strict=True))
    late = await multi_vectors([found.late for found in results], options)
    rows: Rows = []
    for found, matrix in zip(results, late, strict=True):
        dense = shape_vectors(
            found.dense[None], normalize=model.spec.normalize, dimensions=None, dim=None
        )[0]
        rows.append(
            {
                names["dense"]: dense,
                names["sparse"]: render(found.sparse, options.return_tokens),
                names["late"]: matrix,
            }
        )
    return rows, tokens


async def embed_hybrid(
    members: Sequence[Member], texts: Sequence[str], options: HybridOptions
) -> tuple[list[dict[str, Any]], int]:
    """Every member's vectors for every text, members run concurrently; total tokens."""
    results = await asyncio.gather(*(_member_vectors(m, texts, options) for m in members))
    rows: list[dict[str, Any]] = [{} for _ in texts]
    for vectors, _ in results:
        for row, named in zip(rows, vectors, strict=True):
            row.update(named)
    return rows, sum(tokens for _, tokens in results)

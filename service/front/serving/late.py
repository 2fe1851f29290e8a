"""Late-interaction logic: multi-vectors through the batcher, their encodings, MaxSim."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.front.schemas.late import MultiVector
from service.front.shared.batched import Items, submit_counted
from service.models.kinds import m3
from service.models.kinds.late import LateItem, Matrix, maxsim, prepare
from service.models.kinds.m3 import is_m3
from service.models.loaded import LoadedModel


@dataclass(frozen=True)
class LateResult:
    matrices: list[Matrix]  # one (tokens, dim) float32 matrix per input
    tokens: int  # real tokens fed to the model (mask padding of queries not counted)
    token_strings: list[list[str]] = field(default_factory=list)  # per input, per row


async def embed_late(
    model: LoadedModel,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    truncate: bool,
    with_tokens: bool = False,
) -> LateResult:
    """Embed queries and documents in one batcher request; matrices in that order, and with
    `with_tokens` the vocabulary token behind each of their rows."""
    strings: list[list[str]] = []

    def prepare_items() -> list[tuple[int, Any]]:
        if is_m3(model):  # BGE-M3: its ColBERT output; queries and documents alike
            m3_items = m3.prepare(model, [*queries, *documents], ("late",), truncate)
            rows = [item.encoded.ids[1:] for _, item in m3_items]  # all but [CLS]
            items: list[tuple[int, Any]] = list(m3_items)
        else:
            late_items = prepare(model, queries, "query", truncate) if queries else []
            if documents:
                late_items += prepare(model, documents, "document", truncate)
            rows = [item.ids[item.keep] for _, item in late_items]
            items = list(late_items)
        if with_tokens:
            tokenizer = model.encoder.tokenizer
            strings.extend([str(tokenizer.id_to_token(int(i))) for i in ids] for ids in rows)
        return items

    matrices, tokens = await submit_counted(model, prepare_items, real_tokens)
    return LateResult(matrices, tokens, strings)


def real_tokens(items: Items) -> int:
    """Tokens fed to the model: a ColBERT query's mask padding is not counted."""
    return sum(item.tokens if isinstance(item, LateItem) else length for length, item in items)


def decode_vectors(value: MultiVector, where: str) -> Matrix:
    """A precomputed multi-vector as a (tokens, dim) float32 matrix; 400 when malformed."""
    param = where.split(".")[0]
    if isinstance(value.embedding, str):
        shape = value.shape
        if shape is None or len(shape) != 2 or min(shape) < 1:
            raise InvalidInput(f"{where}: base64 vectors need shape [tokens, dim]", param=param)
        try:
            raw = base64.b64decode(value.embedding, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: embedding is not valid base64", param=param) from None
        if len(raw) != shape[0] * shape[1] * 4:
            raise InvalidInput(
                f"{where}: {len(raw)} bytes do not hold a float32 matrix of shape {shape}",
                param=param,
            )
        matrix = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    else:
        rows = value.embedding
        if not rows or len({len(row) for row in rows}) != 1 or not rows[0]:
            raise InvalidInput(
                f"{where}: embedding must be a non-empty list of rows of equal length", param=param
            )
        matrix = np.asarray(rows, dtype=np.float32)
    if not np.all(np.isfinite(matrix)):
        raise InvalidInput(f"{where}: embedding holds NaN or infinite values", param=param)
    return matrix


async def resolve_late(
    model: LoadedModel | None,
    query: str | MultiVector,
    documents: Sequence[str | MultiVector],
    *,
    truncate: bool,
) -> tuple[Matrix, list[Matrix], int]:
    """The query's and the documents' multi-vectors (texts embedded in one batcher request,
    precomputed vectors decoded), and the tokens embedded."""
    given = {  # precomputed vectors first, so that malformed ones cost no inference
        index: decode_vectors(doc, f"documents.{index}")
        for index, doc in enumerate(documents)
        if not isinstance(doc, str)
    }
    given_query = None if isinstance(query, str) else decode_vectors(query, "query")
    queries = [query] if isinstance(query, str) else []
    texts = [doc for doc in documents if isinstance(doc, str)]
    result = LateResult([], 0)
    if queries or texts:
        if model is None:
            raise InvalidInput("texts need a late-interaction model", param="model")
        result = await embed_late(model, queries, texts, truncate=truncate)
    embedded = iter(result.matrices)
    query_vectors = next(embedded) if given_query is None else given_query
    doc_vectors = [given[i] if i in given else next(embedded) for i in range(len(documents))]
    return query_vectors, doc_vectors, result.tokens


def maxsim_scores(query: Matrix, documents: Sequence[Matrix]) -> list[float]:
    dim = query.shape[1]
    for index, doc in enumerate(documents):
        if doc.shape[1] != dim:
            raise InvalidInput(
                f"documents.{index}: vectors of dimension {doc.shape[1]}, the query's are {dim}",
                param="documents",
            )
    return [maxsim(query, doc) for doc in documents]

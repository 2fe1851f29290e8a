"""The chunked answers of /embed/dense and /embed/sparse: per input its chunks (place, tokens,
vector) and, with `chunking.pool`, one vector pooled from them.

Pooling: ``mean`` averages the chunks' vectors as they are returned (after normalisation and
`dimensions`) weighted by each chunk's tokens, as OpenAI's cookbook does for long inputs;
``max`` takes each component's largest value. A dense pooled vector is L2-normalised again
when the chunks' vectors are; a sparse one keeps every index any chunk has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.front.http.encoding import encode_base64, encode_vectors
from service.front.schemas.chunking import Pool
from service.front.schemas.embeddings import DenseRequest
from service.front.serving.chunking import Chunked, Piece
from service.front.serving.dense import shape_vectors
from service.front.serving.sparse import render
from service.models.kinds.dense import Vectors, l2_normalize
from service.models.kinds.sparse import SparseVector
from service.models.loaded import LoadedModel


def _weights(pieces: Sequence[Piece]) -> list[float]:
    weights = [float(piece.tokens) for piece in pieces]
    return weights if sum(weights) > 0 else [1.0] * len(pieces)


def _place(piece: Piece) -> dict[str, int]:
    return {"start": piece.span.start, "end": piece.span.end, "tokens": piece.tokens}


def pool_dense(vectors: Vectors, pieces: Sequence[Piece], how: Pool, unit: bool) -> Vectors:
    if how == "max":
        pooled = vectors.max(axis=0)
    else:
        pooled = np.average(vectors, axis=0, weights=_weights(pieces)).astype(np.float32)
    return l2_normalize(pooled) if unit else pooled


def dense_body(model: LoadedModel, chunked: Chunked, body: DenseRequest) -> dict[str, Any]:
    """The answer's fields: model, dim, documents, usage's token count left to the caller."""
    assert body.chunking is not None
    normalize = model.spec.normalize if body.normalize is None else body.normalize
    flat = np.stack([vector for results in chunked.results for vector in results])
    shaped = shape_vectors(
        flat, normalize=normalize, dimensions=body.dimensions, dim=model.spec.dim
    )
    unit = normalize or body.dimensions is not None
    documents = []
    begin = 0
    for index, pieces in enumerate(chunked.pieces):
        rows = shaped[begin : begin + len(pieces)]
        begin += len(pieces)
        encoded = encode_vectors(rows, body.encoding_format)
        document: dict[str, Any] = {
            "index": index,
            "chunks": [
                {**_place(piece), "embedding": vector}
                for piece, vector in zip(pieces, encoded, strict=True)
            ],
        }
        if body.chunking.pool is not None:
            pooled = pool_dense(rows, pieces, body.chunking.pool, unit)
            document["embedding"] = (
                encode_base64(pooled) if body.encoding_format == "base64" else pooled
            )
        documents.append(document)
    return {"model": model.name, "dim": int(shaped.shape[1]), "documents": documents}


def pool_sparse(
    vectors: Sequence[SparseVector], pieces: Sequence[Piece], how: Pool
) -> SparseVector:
    weights = _weights(pieces)
    total = sum(weights)
    values: dict[int, float] = {}
    tokens: dict[int, str] = {}
    for vector, weight in zip(vectors, weights, strict=True):
        names = vector.tokens or ("",) * len(vector.indices)
        for index, value, name in zip(vector.indices, vector.values, names, strict=True):
            key = int(index)
            if how == "max":
                values[key] = max(values.get(key, 0.0), float(value))
            else:
                values[key] = values.get(key, 0.0) + float(value) * weight / total
            tokens[key] = name
    return SparseVector.from_weights(values, tokens)


def sparse_documents(
    chunked: Chunked, pool: Pool | None, with_tokens: bool
) -> list[dict[str, Any]]:
    documents = []
    for index, (pieces, vectors) in enumerate(zip(chunked.pieces, chunked.results, strict=True)):
        document: dict[str, Any] = {
            "index": index,
            "chunks": [
                {**_place(piece), "embedding": render(vector, with_tokens)}
                for piece, vector in zip(pieces, vectors, strict=True)
            ],
        }
        if pool is not None:
            document["embedding"] = render(pool_sparse(vectors, pieces, pool), with_tokens)
        documents.append(document)
    return documents

"""Compressing multi-vectors per request (service/models/multivector.py), in a worker thread,
and their items in the answers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput
from service.front.http.encoding import multi_vector_item
from service.front.schemas.multivector import CompressedForm, Compression
from service.models import multivector
from service.models.loaded import LoadedModel
from service.models.multivector import Matrix, MuveraParams, Side

MAX_MUVERA_SIZE = 1 << 17  # values of one encoding (FastEmbed's defaults: 10,240)


@dataclass(frozen=True, slots=True)
class Compressed:
    """One input's multi-vector as sent: rows of floats, one vector, or rows of bytes."""

    form: CompressedForm
    array: npt.NDArray[Any]
    rows: int  # rows of the (pooled) multi-vector behind it


def is_raw(compression: Compression | None) -> bool:
    return compression is None or compression == Compression()


def muvera_params(compression: Compression, dim: int) -> MuveraParams | None:
    """The checked MUVERA parameters (400 when they do not fit the rows' dimension)."""
    if compression.muvera is None:
        return None
    if compression.binary:
        raise InvalidInput("compress: muvera and binary exclude each other", param="compress")
    options = compression.muvera
    params = MuveraParams(options.k_sim, options.dim_proj, options.r_reps, options.seed)
    if params.dim_proj > dim:
        raise InvalidInput(
            f"compress.muvera.dim_proj must be at most the vectors' dimension {dim}",
            param="compress",
        )
    if params.size > MAX_MUVERA_SIZE:
        raise InvalidInput(
            f"compress.muvera gives {params.size} values per input (r_reps * 2**k_sim * "
            f"dim_proj); the limit is {MAX_MUVERA_SIZE}",
            param="compress",
        )
    return params


def check_compression(
    compression: Compression | None, model: LoadedModel, return_tokens: bool = False
) -> None:
    """The request's compression, checked before any inference (400 when it cannot apply)."""
    if compression is None:
        return
    if return_tokens and not is_raw(compression):
        raise InvalidInput(
            "return_tokens applies to raw multi-vectors; pooled rows have no one token",
            param="return_tokens",
        )
    muvera_params(compression, int(model.spec.dim or 0))


def compress_one(
    matrix: Matrix, compression: Compression, params: MuveraParams | None, side: Side
) -> Compressed:
    pooled = multivector.pool_tokens(matrix, compression.pool_factor)
    rows = int(pooled.shape[0])
    if params is not None:
        encoder = multivector.muvera(params, int(matrix.shape[1]))
        return Compressed("muvera", encoder.encode(pooled, side), rows)
    if compression.binary:
        return Compressed("ubinary", multivector.binarize(pooled), rows)
    return Compressed("float", pooled, rows)


async def compress(
    matrices: Sequence[Matrix], compression: Compression | None, sides: Sequence[Side]
) -> list[Compressed]:
    """Each input's multi-vector compressed as asked (raw: unchanged, no thread)."""
    if compression is None or is_raw(compression):
        return [Compressed("float", m, int(m.shape[0])) for m in matrices]
    dims = {int(m.shape[1]) for m in matrices}
    params = muvera_params(compression, max(dims)) if dims else None

    def run() -> list[Compressed]:
        return [
            compress_one(m, compression, params, side)
            for m, side in zip(matrices, sides, strict=True)
        ]

    return await asyncio.to_thread(run)


def compressed_item(index: int, found: Compressed, encoding_format: str) -> dict[str, Any]:
    """One input's item: /embed/late's shape, with `type` and the sent array's `shape`."""
    if found.form == "float":
        return {**multi_vector_item(index, found.array, encoding_format), "type": "float"}
    shape = list(found.array.shape)
    item: dict[str, Any] = {"index": index, "tokens": found.rows, "shape": shape}
    if found.form == "muvera":
        vector = np.asarray(found.array, dtype=np.float32)
        embedding: Any = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            if encoding_format == "base64"
            else vector
        )
    else:
        raw = np.ascontiguousarray(found.array, dtype=np.uint8)
        embedding = (
            base64.b64encode(raw.tobytes()).decode("ascii")
            if encoding_format == "base64"
            else raw.astype(np.int64)
        )
    return {**item, "type": found.form, "embedding": embedding}


def vector_value(found: Compressed) -> Any:
    """A compressed multi-vector as a named vector of /embed/hybrid (for Qdrant)."""
    if found.form == "ubinary":
        return np.asarray(found.array, dtype=np.int64)
    return found.array

"""How responses are written: compact JSON, vectors and multi-vectors as float lists or
base64 (little-endian float32, what OpenAI's SDKs decode), and token usage."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi.responses import Response

Floats = npt.NDArray[np.float32]


def json_response(body: object) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


def token_usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def encode_base64(array: Floats) -> str:
    """A vector or a matrix as the base64 of its little-endian float32 bytes, row-major."""
    return base64.b64encode(np.asarray(array, dtype="<f4").tobytes()).decode("ascii")


def encode_vectors(vectors: Floats, encoding_format: str) -> list[str] | list[list[float]]:
    """(n, dim) vectors as n base64 strings or n lists of floats."""
    if encoding_format == "base64":
        return [encode_base64(vector) for vector in vectors]
    return vectors.tolist()  # type: ignore[no-any-return]


def multi_vector_item(index: int, matrix: Floats, encoding_format: str) -> dict[str, Any]:
    """One input's (tokens, dim) matrix in /embed/late's item shape."""
    rows, dim = matrix.shape
    embedding = encode_base64(matrix) if encoding_format == "base64" else matrix.tolist()
    return {"index": index, "tokens": rows, "shape": [rows, dim], "embedding": embedding}

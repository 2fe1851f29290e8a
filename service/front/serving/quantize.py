"""Quantised vectors: sign bits packed eight to a byte, and int8 / uint8 scaled by the model's
calibrated ranges.

The definitions are sentence-transformers' ``quantize_embeddings`` (what Cohere's and other
engines' int8 and binary outputs mean):

- ``ubinary``: ``numpy.packbits(vector > 0)``: dimension 0 is the high bit of byte 0; a
  384-dimensional vector is 48 bytes, each 0..255. ``binary`` is the same bytes minus 128
  (-128..127), Cohere's signed form.
- ``uint8``: each dimension scaled from the model's calibrated [min, max] onto 256 steps,
  ``floor((x - min) / ((max - min) / 255))`` clipped to 0..255; ``int8`` is that minus 128.

The ranges are per dimension, measured once on real text when the model is converted
(service/convert/calibration.py) and recorded in its service_model.json. They describe the
vectors as the model serves them by default, so int8 and uint8 are refused for requests that
change the vectors' scale (``dimensions``, or ``normalize`` against the model's own).
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import get_args

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput
from service.front.http.encoding import Floats, encode_vectors
from service.front.schemas.embeddings import EmbeddingType
from service.models.loaded import LoadedModel
from service.models.store import METADATA_FILE, read_metadata

EMBEDDING_TYPES: tuple[str, ...] = get_args(EmbeddingType)
CALIBRATION_KEY = "calibration"  # in service_model.json
Ints = npt.NDArray[np.integer]


def pack_bits(vectors: Floats, *, signed: bool) -> Ints:
    """(n, dim) vectors as (n, ceil(dim / 8)) bytes of their sign bits (positive: 1)."""
    packed: Ints = np.packbits(np.asarray(vectors) > 0, axis=-1)
    return _signed(packed) if signed else packed


def scale_bytes(vectors: Floats, low: Floats, high: Floats, *, signed: bool) -> Ints:
    """(n, dim) vectors on 256 steps between the per-dimension `low` and `high`."""
    steps = (high - low) / np.float32(255)
    steps = np.where(steps == 0, np.float32(1), steps)  # a constant dimension
    levels = np.floor((np.asarray(vectors, dtype=np.float32) - low) / steps)
    unsigned: Ints = np.clip(levels, 0, 255).astype(np.uint8)
    return _signed(unsigned) if signed else unsigned


def _signed(unsigned: Ints) -> Ints:
    """0..255 as -128..127 (the byte minus 128)."""
    shifted: Ints = (unsigned.astype(np.int16) - 128).astype(np.int8)
    return shifted


@functools.lru_cache(maxsize=64)
def _recorded(directory: Path, mtime: float) -> tuple[Floats, Floats] | None:
    """The ranges in a directory's service_model.json (read again when the file changes)."""
    metadata = read_metadata(directory) or {}
    found = metadata.get(CALIBRATION_KEY)
    if not isinstance(found, dict):
        return None
    return np.asarray(found["min"], dtype=np.float32), np.asarray(found["max"], dtype=np.float32)


def ranges(model: LoadedModel) -> tuple[Floats, Floats]:
    """The model's recorded per-dimension (min, max); 400 naming the fix when it has none."""
    path = model.directory / METADATA_FILE
    found = _recorded(model.directory, path.stat().st_mtime) if path.is_file() else None
    if found is None or found[0].shape[0] != model.spec.dim:
        raise InvalidInput(
            f"model {model.name!r} has no int8 calibration ranges, which int8 and uint8 need: "
            f"record them with `python -m service.convert.calibration {model.directory}` "
            "(the converter writes them for dense models); binary and ubinary need none",
            param="embedding_type",
            code="not_calibrated",
        )
    return found


def check_scale(embedding_type: str, *, dimensions: int | None, renormalised: bool) -> None:
    """int8 / uint8 ranges hold for the model's own full vectors only."""
    if embedding_type not in ("int8", "uint8"):
        return
    if dimensions is not None or renormalised:
        raise InvalidInput(
            f"{embedding_type} is scaled by ranges calibrated on the model's full vectors as it "
            "serves them; it cannot be combined with dimensions or a normalize other than the "
            "model's own (binary and ubinary can)",
            param="embedding_type",
        )


def typed_rows(array: Floats | Ints, encoding_format: str) -> list[str] | list[Floats] | list[Ints]:
    """(n, width) rows for json_response: arrays, or base64 of each row's bytes (little-endian
    float32 for float vectors, one byte per value for the quantised ones)."""
    if array.dtype.kind == "f":
        return encode_vectors(np.asarray(array, dtype=np.float32), encoding_format)
    if encoding_format == "base64":
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in array]
    return list(array)


def quantized(model: LoadedModel, vectors: Floats, embedding_type: str) -> Floats | Ints:
    """(n, dim) float vectors in the asked type; float ones as they are."""
    if embedding_type in ("binary", "ubinary"):
        return pack_bits(vectors, signed=embedding_type == "binary")
    if embedding_type in ("int8", "uint8"):
        low, high = ranges(model)
        return scale_bytes(vectors, low, high, signed=embedding_type == "int8")
    return vectors

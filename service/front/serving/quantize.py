"""Quantised vectors: sign bits packed eight to a byte, and int8 / uint8 on one scale shared by
every dimension.

- ``ubinary``: ``numpy.packbits(vector > 0)`` (sentence-transformers' ``quantize_embeddings``):
  dimension 0 is the high bit of byte 0; a 384-dimensional vector is 48 bytes, each 0..255.
  ``binary`` is the same bytes minus 128 (-128..127), Cohere's signed form.
- ``int8``: ``round(x / scale)`` clipped to -127..127, with one ``scale`` for all dimensions,
  the largest absolute value the model's vectors reached on real text divided by 127. Zero
  stays zero and every dimension is scaled alike, so the int8 vector points where the float
  one does: dot product and cosine over int8 vectors rank as over the float ones.
- ``uint8``: the int8 value plus 128 (0..255, zero at 128). A Euclidean distance over uint8
  vectors is the int8 one (the offset cancels); for a dot product or cosine subtract 128.

The largest absolute value is measured once on real text when the model is converted
(service/convert/calibration.py) and recorded in its service_model.json (a directory that
recorded only per-dimension ranges gives it from them). It describes the vectors as the model
serves them by default, so int8 and uint8 are refused for requests that change the vectors'
scale (``dimensions``, or ``normalize`` against the model's own).

An earlier form scaled each dimension from its own calibrated [min, max] (sentence-transformers'
``quantize_embeddings`` with ranges): it shifts every dimension by its own offset, so a dot
product over it ranked poorly (recall@10 0.765 against the float search, against 0.98 and more
for the shared scale; ``make recall`` measures both). No client needs it; it is not served.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any, get_args

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


def scale_bytes(vectors: Floats, scale: float, *, signed: bool) -> Ints:
    """(n, dim) vectors as ``round(x / scale)`` in -127..127 (int8), or that plus 128 (uint8)."""
    levels = np.rint(np.asarray(vectors, dtype=np.float32) / np.float32(scale))
    signed_levels: Ints = np.clip(levels, -127, 127).astype(np.int8)
    if signed:
        return signed_levels
    unsigned: Ints = (signed_levels.astype(np.int16) + 128).astype(np.uint8)
    return unsigned


def shared_scale(calibration: dict[str, Any]) -> float:
    """The int8 step of a recorded calibration: its largest absolute value over 127 (taken from
    the per-dimension ranges where only they were recorded)."""
    if "abs_max" in calibration:
        widest = float(calibration["abs_max"])
    else:
        widest = max(
            float(np.abs(calibration["min"]).max()), float(np.abs(calibration["max"]).max())
        )
    return widest / 127 if widest > 0 else 1.0


def _signed(unsigned: Ints) -> Ints:
    """0..255 as -128..127 (the byte minus 128)."""
    shifted: Ints = (unsigned.astype(np.int16) - 128).astype(np.int8)
    return shifted


@functools.lru_cache(maxsize=64)
def _recorded(directory: Path, mtime: float) -> tuple[float, int] | None:
    """(int8 step, dimensions) of a directory's service_model.json (read again when the file
    changes)."""
    metadata = read_metadata(directory) or {}
    found = metadata.get(CALIBRATION_KEY)
    if not isinstance(found, dict):
        return None
    return shared_scale(found), len(found["min"])


def model_scale(model: LoadedModel) -> float:
    """The model's recorded int8 step; 400 naming the fix when it has none."""
    path = model.directory / METADATA_FILE
    found = _recorded(model.directory, path.stat().st_mtime) if path.is_file() else None
    if found is None or found[1] != model.spec.dim:
        raise InvalidInput(
            f"model {model.name!r} has no int8 calibration, which int8 and uint8 need: "
            f"record them with `python -m service.convert.calibration {model.directory}` "
            "(the converter writes them for dense models); binary and ubinary need none",
            param="embedding_type",
            code="not_calibrated",
        )
    return found[0]


def check_scale(embedding_type: str, *, dimensions: int | None, renormalised: bool) -> None:
    """int8 / uint8 ranges hold for the model's own full vectors only."""
    if embedding_type not in ("int8", "uint8"):
        return
    if dimensions is not None or renormalised:
        raise InvalidInput(
            f"{embedding_type} is scaled by a range calibrated on the model's full vectors as it "
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
        return scale_bytes(vectors, model_scale(model), signed=embedding_type == "int8")
    return vectors

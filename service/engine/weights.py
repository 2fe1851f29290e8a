"""Reading an ONNX graph's weights (its initializers) without the `onnx` package.

Sessions of the same graph can share one copy of its weights (ONNX Runtime's
`SessionOptions.add_initializer`), so a model can keep sessions of different thread counts
without a copy of the weights for each (docs/scaling.md, "Adaptive sessions"). The service's
runtime does not install `onnx`, so this reads the few fields it needs from the protobuf wire
format: ModelProto.graph (field 7), GraphProto.initializer (field 5), and in each TensorProto
its dims (1), data_type (2), typed data (4, 5, 7, 10, 11), name (8), raw_data (9) and
data_location (14). A layout it does not read (weights in external files, strings, segments)
raises Unreadable, and the caller loads the one plain session instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# TensorProto.DataType -> numpy dtype, for the types an initializer can hold as numbers.
DTYPES: dict[int, type[np.generic]] = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}
FLOAT, FLOAT16, DOUBLE, UINT64 = 1, 10, 11, 13
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
GRAPH, INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
DIMS, DATA_TYPE, SEGMENT, FLOAT_DATA, INT32_DATA, STRING_DATA = 1, 2, 3, 4, 5, 6
INT64_DATA, NAME, RAW_DATA, DOUBLE_DATA, UINT64_DATA = 7, 8, 9, 10, 11
EXTERNAL_DATA, DATA_LOCATION = 13, 14
UNREAD = {SEGMENT, STRING_DATA, EXTERNAL_DATA}
ALIGNMENT = 64


class Unreadable(ValueError):
    """A graph whose weights this reader does not take (the caller falls back)."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message: a varint's value, or the (start,
    end) span of a fixed-size or length-delimited field."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
            continue
        if wire == LENGTH:
            size, pos = _varint(buf, pos)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
        else:
            raise Unreadable(f"protobuf wire type {wire} (groups) in an ONNX graph")
        if pos + size > end:
            raise Unreadable("truncated ONNX graph: a field runs past its end")
        yield number, wire, (pos, pos + size)
        pos += size


def _varints(buf: memoryview, wire: int, value: Any) -> list[int]:
    """A repeated integer field: one unpacked value, or a packed run of them."""
    if wire == VARINT:
        return [value]
    pos, end = value
    out = []
    while pos < end:
        number, pos = _varint(buf, pos)
        out.append(number)
    return out


def _tensor(buf: memoryview, start: int, end: int) -> tuple[str, npt.NDArray[Any]]:
    dims: list[int] = []
    data_type, name = FLOAT, ""
    raw: memoryview | None = None
    integers: list[int] = []
    fixed: list[bytes] = []
    for number, wire, value in _fields(buf, start, end):
        if number == DIMS:
            dims += _varints(buf, wire, value)
        elif number == DATA_TYPE:
            data_type = value
        elif number == NAME:
            name = bytes(buf[value[0] : value[1]]).decode()
        elif number == RAW_DATA:
            raw = buf[value[0] : value[1]]
        elif number in (INT32_DATA, INT64_DATA, UINT64_DATA):
            integers += _varints(buf, wire, value)
        elif number in (FLOAT_DATA, DOUBLE_DATA):
            fixed.append(bytes(buf[value[0] : value[1]]))
        elif number in UNREAD or (number == DATA_LOCATION and value != 0):
            raise Unreadable(f"initializer {name or '?'} keeps its data in a layout not read here")
    if data_type not in DTYPES:
        raise Unreadable(f"initializer {name!r} has ONNX data type {data_type}")
    dtype = np.dtype(DTYPES[data_type])
    # `values` may be a view of the file's bytes or in a wider type: _aligned makes the one
    # copy, in the tensor's own type.
    if raw is not None:  # little-endian bytes, whatever the machine
        values = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    elif fixed:
        wide = "<f8" if data_type == DOUBLE else "<f4"
        values = np.frombuffer(b"".join(fixed), dtype=wide)
    elif data_type == FLOAT16:  # int32_data holds the half floats' bits
        values = np.array(integers, dtype=np.uint16).view(np.float16)
    elif data_type == UINT64:
        values = np.array(integers, dtype=np.uint64)
    else:  # varints of signed types are two's complement in 64 bits
        values = np.array([v - (1 << 64) if v >= 1 << 63 else v for v in integers], np.int64)
    count = int(np.prod(dims)) if dims else 1
    if values.size != count:
        raise Unreadable(f"initializer {name!r}: {values.size} values for shape {dims}")
    return name, _aligned(values.reshape(dims), dtype)


def _aligned(values: npt.NDArray[Any], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """`values` copied into a fresh `dtype` array starting on a 64-byte boundary, as ONNX
    Runtime aligns its own tensors (numpy aligns to 16)."""
    nbytes = values.size * dtype.itemsize
    block = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -block.ctypes.data % ALIGNMENT
    out = block[start : start + nbytes].view(dtype).reshape(values.shape)
    out[...] = values
    return out


def read_initializers(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The graph's top-level initializers by name, as fresh (aligned, writable) arrays.

    Raises Unreadable for a graph whose weights are not all in the file in a layout read
    here; initializers of subgraphs (inside If or Loop nodes) stay in the graph."""
    buf = memoryview(path.read_bytes())
    weights: dict[str, npt.NDArray[Any]] = {}
    try:
        for number, wire, value in _fields(buf, 0, len(buf)):
            if number == GRAPH and wire == LENGTH:
                for inner, inner_wire, span in _fields(buf, *value):
                    if inner == INITIALIZER and inner_wire == LENGTH:
                        name, array = _tensor(buf, *span)
                        weights[name] = array
    except IndexError:  # a varint running past the end
        raise Unreadable(f"{path.name} is truncated") from None
    if not weights:
        raise Unreadable(f"{path.name} has no initializers to share")
    return weights

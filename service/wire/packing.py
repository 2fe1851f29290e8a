"""Compact forms for what most requests carry, so that a request of many inputs costs the
engine a few arrays to unpickle rather than an object and an array per input: with GPU-sized
batches the engine's event loop spent 291 us on a 32-text request input by input, 197 us
packed (docs/benchmarks/2026-12-02-cpu-2core-workers.md).

For requests of at least ``FEWEST`` inputs:

- Items whose payloads are all plain token ids (``text.Encoded``, the dense, SPLADE, BM42 and
  rerank kinds): their lengths, and their ids (and type ids) end to end, as three arrays.
- Results that are all vectors of one shape and type (dense, image): one stacked array.

Anything else travels as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.models.text import Encoded

PACKED_IDS = "ids"
STACKED = "stacked"
FEWEST = 4  # below this, packing costs more than it saves (one text: 53 against 41 us)


def pack_items(items: Sequence[tuple[int, Any]]) -> Any:
    payloads = [payload for _, payload in items]
    if len(payloads) < FEWEST or any(type(p) is not Encoded for p in payloads):
        return list(items)
    sizes = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=len(payloads))
    lengths = np.fromiter((length for length, _ in items), dtype=np.int64, count=len(items))
    ids = np.concatenate([p.ids for p in payloads])
    has_types = [p.type_ids is not None for p in payloads]
    if any(has_types) and not all(has_types):
        return list(items)
    types = np.concatenate([p.type_ids for p in payloads]) if all(has_types) else None
    return (PACKED_IDS, lengths, sizes, ids, types)


def unpack_items(packed: Any) -> list[tuple[int, Any]]:
    if not (isinstance(packed, tuple) and packed and packed[0] == PACKED_IDS):
        return list(packed)
    _, lengths, sizes, ids, types = packed
    cuts = np.cumsum(sizes)[:-1]
    rows = np.split(ids, cuts)
    type_rows = np.split(types, cuts) if types is not None else [None] * len(rows)
    return [
        (int(length), Encoded(row, type_row))
        for length, row, type_row in zip(lengths.tolist(), rows, type_rows, strict=True)
    ]


def pack_results(results: Sequence[Any]) -> Any:
    first = results[0] if results else None
    if isinstance(first, np.ndarray) and all(
        isinstance(r, np.ndarray) and r.shape == first.shape and r.dtype == first.dtype
        for r in results
    ):
        return (STACKED, np.stack(results))
    return list(results)


def unpack_results(packed: Any) -> list[Any]:
    if isinstance(packed, tuple) and packed and packed[0] == STACKED:
        return list(packed[1])
    return list(packed)

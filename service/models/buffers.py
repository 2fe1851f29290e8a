"""Reusable padded input buffers: a batch is padded into arrays that outlive it.

``pad_batch`` (service/models/text.py) allocates three fresh (batch, width) arrays per batch.
``PadBuffers`` keeps one grow-only set per thread instead: the batcher runs each worker's
batches one after another in that worker's own thread, so a thread's arrays are free again
when its next batch comes. A worker whose hung thread was abandoned gets a fresh thread,
and so fresh arrays; the old thread keeps its own. The arrays handed out are contiguous
views into the buffers (what ONNX Runtime takes without a copy), valid until the same thread
pads its next batch, which is after the session has run and the batch was post-processed.

On a GPU, widths can be rounded up to a multiple (``gpu_pad_multiple``): fewer distinct
shapes to warm and kernels on aligned sizes. Padded positions carry mask 0, so the vectors do
not change; on CPU the multiple is 1 (padding costs compute there). Row counts can be rounded
up too (``rows_for``, ``gpu_pad_rows``): the extra rows repeat the first and their outputs are
dropped, so every batch runs at a shape the session was warmed with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from service.models.text import Encoded

Int64 = npt.NDArray[np.int64]


def padded_width(longest: int, multiple: int, cap: int) -> int:
    """``longest`` rounded up to ``multiple``, but never past ``cap`` unless longest is."""
    rounded = -(-longest // multiple) * multiple
    return max(longest, min(rounded, cap))


@dataclass
class _Arrays:
    ids: Int64
    mask: Int64
    types: Int64


def _as_many_rows(items: int, width: int) -> int:
    return items


@dataclass
class PadBuffers:
    """Grow-only padded input arrays, one set per thread."""

    multiple: int = 1
    cap: int = 1 << 30  # widest rounded width (the model's max length)
    # rows to run for (items, padded width): more than the items repeat the first row, so a
    # batch runs at a shape the session has been warmed with (scaling.warmed_rows)
    rows_for: Callable[[int, int], int] = _as_many_rows
    allocations: int = 0  # buffer sets allocated so far, over all threads
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _arrays(self, size: int) -> _Arrays:
        arrays: _Arrays | None = getattr(self._local, "arrays", None)
        if arrays is None or arrays.ids.shape[0] < size:
            capacity = 1 << max(size - 1, 1).bit_length()  # next power of two
            arrays = _Arrays(*(np.empty(capacity, dtype=np.int64) for _ in range(3)))
            self._local.arrays = arrays
            with self._lock:
                self.allocations += 1
        return arrays

    def pad(self, items: Sequence[Encoded], pad_id: int) -> dict[str, Int64]:
        """Right-pad a batch: input_ids, attention_mask, token_type_ids, as pad_batch does."""
        count = len(items)
        lengths = np.fromiter((len(item) for item in items), dtype=np.int64, count=count)
        width = padded_width(int(lengths.max()), self.multiple, self.cap)
        rows = max(count, self.rows_for(count, width))
        arrays = self._arrays(rows * width)
        ids, mask, types = (
            a[: rows * width].reshape(rows, width) for a in (arrays.ids, arrays.mask, arrays.types)
        )
        filled = np.arange(width)[None, :] < lengths[:, None]
        ids.fill(pad_id)
        ids[:count][filled] = np.concatenate([item.ids for item in items])
        np.copyto(mask[:count], filled, casting="unsafe")
        types.fill(0)
        if any(item.type_ids is not None for item in items):
            types[:count][filled] = np.concatenate([_type_ids(item) for item in items])
        for array in (ids, mask, types):
            array[count:] = array[0]  # extra rows: copies of the first, dropped after the run
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _type_ids(item: Encoded) -> Int64:
    return item.type_ids if item.type_ids is not None else np.zeros(len(item), dtype=np.int64)

"""Batch formation as a pure function, so its rules can be tested without a clock.

Rules (see DESIGN.md): the oldest waiting item always goes into the next batch, so nothing
starves; its companions are items of similar length within a window of waiting items, so
little compute is spent on padding; a batch holds at most ``max_items`` items and at most
``max_tokens`` padded tokens (longest length x items).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def padded_cost(lengths: Sequence[int]) -> int:
    return max(lengths) * len(lengths) if lengths else 0


def form_batch(
    lengths: Sequence[int],
    max_items: int,
    max_tokens: int,
    window: int,
    overhead_tokens: float = 16.0,
) -> list[int]:
    """Choose the next batch from items waiting in arrival order.

    ``lengths[i]`` is the token length of the i-th oldest waiting item. Returns the indices
    of the chosen items, sorted by length. Index 0 (the oldest) is always chosen, even when
    it alone is over the token budget.

    Among the runs of items that are contiguous in length order and contain the oldest, it
    takes the one with the best ratio of real tokens to cost, where a batch costs its padded
    tokens (items x longest) plus ``overhead_tokens``, the fixed cost of one inference call
    in token-equivalents. A small overhead (CPU, where padding is the cost) makes tight
    batches of similar lengths; a large one (GPU, where batch size is the lever) makes
    batches as big as the caps allow.
    """
    if not lengths:
        return []
    considered = min(len(lengths), max(window, 1))
    window_lengths = np.asarray(lengths[:considered], dtype=np.float64)
    order = np.argsort(window_lengths, kind="stable")  # by length, then by age
    pos = int(np.flatnonzero(order == 0)[0])
    sizes = window_lengths[order]
    prefix = np.concatenate(([0.0], np.cumsum(sizes)))
    # One candidate per top end `hi` (the run's longest item, so cost = count x sizes[hi]).
    hi = np.arange(pos, min(considered, pos + max_items))
    top = sizes[hi]
    cap = np.minimum(max_items, max_tokens // np.maximum(top, 1)).astype(np.int64)
    lo_min = np.maximum(hi - cap + 1, 0)
    feasible = (lo_min <= pos) | (hi == pos)  # a lone item may exceed the token budget
    # Best start for each end: going down from the oldest, items get shorter, so adding the
    # next one pays (raises useful / cost) until the first one that does not, and none after
    # it does. So "adding item j pays" holds exactly for j above some point: binary search it.
    low = np.minimum(lo_min, pos)
    high = np.full_like(hi, pos)
    while True:
        open_ = low < high
        if not open_.any():
            break
        mid = (low + high) // 2
        useful_above = prefix[hi + 1] - prefix[mid + 1]
        pays = sizes[mid] * (overhead_tokens + (hi - mid) * top) >= top * useful_above
        high = np.where(open_ & pays, mid, high)
        low = np.where(open_ & ~pays, mid + 1, low)
    count = hi - low + 1
    useful = prefix[hi + 1] - prefix[low]
    # Ties go to the bigger batch: more progress for the same efficiency.
    score = np.where(feasible, useful / (overhead_tokens + count * top) + count * 1e-9, -1.0)
    best = int(np.argmax(score))
    return [int(i) for i in order[int(low[best]) : int(hi[best]) + 1]]


def full_batch_waiting(lengths: Sequence[int], max_items: int, max_tokens: int) -> bool:
    """True when the waiting items already fill a batch, so waiting for more is pointless."""
    return len(lengths) >= max_items or sum(lengths) >= max_tokens

"""Batch formation as a pure function, so its rules can be tested without a clock.

Rules (see DESIGN.md): the oldest waiting item always goes into the next batch, so nothing
starves; its companions are items of similar length within a window of waiting items, so
little compute is spent on padding; a batch holds at most ``max_items`` items and at most
``max_tokens`` padded tokens (longest length x items).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# The fixed cost of one inference call in padded tokens, for the single-thread CPU sessions
# that run batches under load (`make packing`; EMBED_BATCH_OVERHEAD_TOKENS in the service).
OVERHEAD_TOKENS = 8.0


def padded_cost(lengths: Sequence[int]) -> int:
    return max(lengths) * len(lengths) if lengths else 0


def form_batch(
    lengths: Sequence[int],
    max_items: int,
    max_tokens: int,
    window: int,
    overhead_tokens: float = OVERHEAD_TOKENS,
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
    low = _best_starts(sizes, prefix, pos, hi, top, np.minimum(lo_min, pos), overhead_tokens)
    count = hi - low + 1
    useful = prefix[hi + 1] - prefix[low]
    # Ties go to the bigger batch: more progress for the same efficiency.
    score = np.where(feasible, useful / (overhead_tokens + count * top) + count * 1e-9, -1.0)
    best = int(np.argmax(score))
    return [int(i) for i in order[int(low[best]) : int(hi[best]) + 1]]


# Up to this many (start, end) pairs, scoring them all takes fewer numpy calls than the search.
EXHAUSTIVE_PAIRS = 4096


def _best_starts(
    sizes: Floats,
    prefix: Floats,
    pos: int,
    hi: Ints,
    top: Floats,
    lo_min: Ints,
    overhead: float,
) -> Ints:
    """For each end ``hi``, the start in [lo_min, pos] with the best useful / cost.

    Going down from the oldest, items get shorter, so adding the next one pays (raises
    useful / cost) until the first one that does not, and none after it does: "adding item
    j pays" holds exactly for j above some point, which a binary search finds. Small windows
    score every pair instead (the same answer, ties to the bigger batch)."""
    first = int(lo_min.min())
    if (pos + 1 - first) * len(hi) <= EXHAUSTIVE_PAIRS:
        lo = np.arange(first, pos + 1)[:, None]
        count = hi[None, :] - lo + 1
        useful = prefix[hi + 1][None, :] - prefix[lo]
        score = useful / (overhead + count * top[None, :]) + count * 1e-9
        score = np.where(lo >= lo_min[None, :], score, -1.0)
        best: Ints = first + np.argmax(score, axis=0)
        return best
    low, high = lo_min.copy(), np.full_like(hi, pos)
    while True:
        open_ = low < high
        if not open_.any():
            return low
        mid = (low + high) // 2
        useful_above = prefix[hi + 1] - prefix[mid + 1]
        pays = sizes[mid] * (overhead + (hi - mid) * top) >= top * useful_above
        high = np.where(open_ & pays, mid, high)
        low = np.where(open_ & ~pays, mid + 1, low)


def full_batch_waiting(lengths: Sequence[int], max_items: int, max_tokens: int) -> bool:
    """True when the waiting items already fill a batch, so waiting for more is pointless."""
    return len(lengths) >= max_items or sum(lengths) >= max_tokens

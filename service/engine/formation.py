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
    form = _form_python if considered <= PYTHON_WINDOW else _form_numpy
    return form(lengths[:considered], max_items, max_tokens, overhead_tokens)


# Up to this many waiting items the batch is chosen in plain Python, beyond it with numpy: the
# same rule, the same answer (tests/test_batcher.py checks one against the other). numpy's
# two dozen calls cost about 40 us whatever the size, on the event loop for every batch;
# Python takes 3-15 us for the 1-20 items waiting when serving on CPU, and numpy is the
# faster from about 150 (GPU windows).
PYTHON_WINDOW = 64


def _score(useful: float, count: int, top: float, overhead: float) -> float:
    """Real tokens per token of cost; ties go to the bigger batch (more progress for the
    same efficiency). A cost of 0 (empty items, no overhead) counts as tiny, not as 0."""
    return useful / max(overhead + count * top, 1e-12) + count * 1e-9


def _form_python(
    lengths: Sequence[int], max_items: int, max_tokens: int, overhead: float
) -> list[int]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)  # stable: by length, then age
    pos = order.index(0)
    sizes = [float(lengths[i]) for i in order]
    prefix = [0.0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    best_score, best_low, best_high = -2.0, pos, pos
    for hi in range(pos, min(len(sizes), pos + max_items)):
        top = sizes[hi]
        lo_min = max(hi - min(max_items, int(max_tokens // max(top, 1))) + 1, 0)
        if lo_min > pos and hi != pos:
            break  # longer tops only shrink the cap: no later end is feasible either
        low, high = min(lo_min, pos), pos
        while low < high:  # the first start from which every added item pays (_best_starts)
            mid = (low + high) // 2
            useful_above = prefix[hi + 1] - prefix[mid + 1]
            if sizes[mid] * (overhead + (hi - mid) * top) >= top * useful_above:
                high = mid
            else:
                low = mid + 1
        score = _score(prefix[hi + 1] - prefix[low], hi - low + 1, top, overhead)
        if score > best_score:
            best_score, best_low, best_high = score, low, hi
    return order[best_low : best_high + 1]


def _form_numpy(
    lengths: Sequence[int], max_items: int, max_tokens: int, overhead: float
) -> list[int]:
    considered = len(lengths)
    window_lengths = np.asarray(lengths, dtype=np.float64)
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
    low = _best_starts(sizes, prefix, pos, hi, top, np.minimum(lo_min, pos), overhead)
    count = hi - low + 1
    useful = prefix[hi + 1] - prefix[low]
    cost = np.maximum(overhead + count * top, 1e-12)
    score = np.where(feasible, useful / cost + count * 1e-9, -1.0)  # as _score
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
        score = useful / np.maximum(overhead + count * top[None, :], 1e-12) + count * 1e-9
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

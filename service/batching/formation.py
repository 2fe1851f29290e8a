"""Batch formation as a pure function, so its rules can be tested without a clock.

Rules (see DESIGN.md): the oldest waiting item always goes into the next batch, so nothing
starves; its companions are the items of closest length within a window of waiting items,
so little compute is spent on padding; a batch holds at most ``max_items`` items and at most
``max_tokens`` padded tokens (longest length x items).
"""

from __future__ import annotations

from collections.abc import Sequence


def padded_cost(lengths: Sequence[int]) -> int:
    return max(lengths) * len(lengths) if lengths else 0


def form_batch(lengths: Sequence[int], max_items: int, max_tokens: int, window: int) -> list[int]:
    """Choose the next batch from items waiting in arrival order.

    ``lengths[i]`` is the token length of the i-th oldest waiting item. Returns the indices
    of the chosen items, sorted by length. Index 0 (the oldest) is always chosen, even when
    it alone is over the token budget.
    """
    if not lengths:
        return []
    considered = min(len(lengths), max(window, 1))
    order = sorted(range(considered), key=lambda i: (lengths[i], i))
    pos = order.index(0)
    lo, hi = pos, pos  # the chosen run is order[lo..hi], contiguous in length order
    longest = lengths[0]
    while hi - lo + 1 < max_items:
        below = order[lo - 1] if lo > 0 else None
        above = order[hi + 1] if hi + 1 < considered else None
        if below is None and above is None:
            break
        # Take the neighbour whose length is closest to the oldest item's length.
        if above is None or (
            below is not None and lengths[0] - lengths[below] <= lengths[above] - lengths[0]
        ):
            candidate, new_longest = below, longest
        else:
            candidate, new_longest = above, max(longest, lengths[above])
        assert candidate is not None
        if new_longest * (hi - lo + 2) > max_tokens:
            # A longer companion would blow the budget; a shorter one might still fit.
            if candidate == above and below is not None and longest * (hi - lo + 2) <= max_tokens:
                lo -= 1
                continue
            break
        if candidate == below:
            lo -= 1
        else:
            hi += 1
            longest = new_longest
    return order[lo : hi + 1]


def full_batch_waiting(lengths: Sequence[int], max_items: int, max_tokens: int) -> bool:
    """True when the waiting items already fill a batch, so waiting for more is pointless."""
    return len(lengths) >= max_items or sum(lengths) >= max_tokens

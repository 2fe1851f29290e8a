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
    order = sorted(range(considered), key=lambda i: (lengths[i], i))
    pos = order.index(0)
    sizes = np.array([lengths[i] for i in order], dtype=np.float64)
    prefix = np.concatenate(([0.0], np.cumsum(sizes)))
    lo = np.arange(max(0, pos - max_items + 1), pos + 1)[:, None]
    hi = np.arange(pos, min(considered, pos + max_items))[None, :]
    count = hi - lo + 1
    padded = count * sizes[hi]
    useful = prefix[hi + 1] - prefix[lo]
    allowed = (count <= max_items) & ((padded <= max_tokens) | (count == 1))
    # Ties go to the bigger batch: more progress for the same efficiency.
    score = np.where(allowed, useful / (overhead_tokens + padded) + count * 1e-9, -1.0)
    best_lo, best_hi = np.unravel_index(int(np.argmax(score)), score.shape)
    start = int(lo[best_lo, 0])
    return order[start : int(hi[0, best_hi]) + 1]


def full_batch_waiting(lengths: Sequence[int], max_items: int, max_tokens: int) -> bool:
    """True when the waiting items already fill a batch, so waiting for more is pointless."""
    return len(lengths) >= max_items or sum(lengths) >= max_tokens

"""A request's inputs through its model's batcher, with the tokens they cost counted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from service.cache.results import submit_cached
from service.models.loaded import LoadedModel

Items = Sequence[tuple[int, Any]]  # (token length, payload) per input


def lengths(items: Items) -> int:
    return sum(length for length, _ in items)


async def submit_counted(
    model: LoadedModel, prepare: Callable[[], Items], count: Callable[[Items], int] = lengths
) -> tuple[list[Any], int]:
    """Run `prepare` in the batcher's thread and queue its items; one result per item, and
    the tokens that `count` finds in the items (their lengths unless told otherwise)."""
    assert model.batcher is not None
    counted: list[int] = []

    def prepare_and_count() -> Items:
        items = prepare()
        counted.append(count(items))
        return items

    results = await submit_cached(model, prepare_and_count, model.cache)
    return results, counted[0] if counted else 0

"""What the kinds whose payloads are tokenized texts (``text.Encoded``: dense, SPLADE, BM42,
rerank) share: the side a text is on, queue items of (token length, input), and a batch
right-padded into feeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from service.models.kinds.contract import Feeds
from service.models.text import Encoded, pad_batch

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

InputType = Literal["query", "document"]  # which side of a search a text is on


def with_lengths(encoded: Sequence[Encoded]) -> list[tuple[int, Encoded]]:
    """The batcher's (length, payload) items."""
    return [(len(item), item) for item in encoded]


def collate(model: LoadedModel, payloads: Sequence[Encoded]) -> Feeds:
    """Right-pad the batch with the tokenizer's pad id (mask and type ids alike)."""
    return dict(pad_batch(payloads, model.encoder.pad_id))

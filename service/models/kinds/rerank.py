"""Cross-encoder reranking: each (query, document) pair is one batch item; one logit per pair.

The query is cut (at a token boundary) to half of what the pair's special tokens leave, so
that truncation, which cuts only the document side, always leaves the document at least as
many tokens as the query (and cutting the longest side first would cut the same tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.errors import PayloadTooLarge
from service.models.kinds.contract import Feeds, KindHandler
from service.models.kinds.encoded import collate, with_lengths
from service.models.text import Encoded, TextEncoder, encode_pairs

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel


def query_budget(encoder: TextEncoder) -> int:
    specials = int(encoder.tokenizer.num_special_tokens_to_add(is_pair=True))
    return max((encoder.max_length - specials) // 2, 1)


def cut_query(encoder: TextEncoder, query: str, *, truncate: bool) -> str:
    """The query as text, cut after its first `query_budget` tokens when longer."""
    budget = query_budget(encoder)
    encoding = encoder.tokenizer.encode(query, add_special_tokens=False)
    if len(encoding.ids) <= budget and not encoding.overflowing:
        return query
    if not truncate:
        raise PayloadTooLarge(
            f"the query is longer than {budget} tokens (half of the model's "
            f"{encoder.max_length}, less special tokens); shorten it or send truncate=true",
            param="query",
        )
    return query[: encoding.offsets[budget - 1][1]]


def prepare_pairs(
    model: LoadedModel, query: str, documents: Sequence[str], truncate: bool
) -> list[tuple[int, Encoded]]:
    """One item per document: the tokenized (query, document) pair, document side cut."""
    encoder = model.encoder
    query = cut_query(encoder, query, truncate=truncate)
    try:
        encoded = encode_pairs(encoder, [(query, doc) for doc in documents], truncate=truncate)
    except PayloadTooLarge as exc:
        message = exc.message.replace("input", "document", 1)
        raise PayloadTooLarge(message, param="documents") from None
    return with_lengths(encoded)


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[float]:
    """The first logit of each row (rerankers here have one label: relevance)."""
    logits = np.asarray(outputs[0], dtype=np.float32).reshape(len(payloads), -1)
    return [float(value) for value in logits[:, 0]]


def sigmoid(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1 / (1 + exp(-x)), written with tanh so that large logits cannot overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * scores))


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    documents = ["warm up", "a somewhat longer document to warm the session for longer shapes " * 4]
    return prepare_pairs(model, "a warm-up query", documents, truncate=True)


HANDLER = KindHandler(collate=collate, postprocess=postprocess, warmup=warmup)

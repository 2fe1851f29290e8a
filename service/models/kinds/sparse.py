"""Sparse vectors and the SPLADE family: weight per vocabulary id = max over the unmasked
positions of log(1 + relu(logit)); only non-zero ids are kept.

Rows of kind ``sparse`` pick their family with ``options.family`` (``splade``, the
default, ``bm25``, ``bm42``, ``if_splade`` or ``minicoil``); ``handler_for`` in the kinds
registry maps it to a handler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.errors import ModelLoadError
from service.models.catalogue import ModelSpec, TokenLimit
from service.models.kinds.contract import Feeds, KindHandler
from service.models.kinds.encoded import InputType, collate, with_lengths
from service.models.text import Encoded, encode_texts

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

FAMILIES = ("splade", "bm25", "bm42", "if_splade", "minicoil")


@dataclass(frozen=True)
class SparseVector:
    """Indices sorted ascending, one value per index, and (optionally) the token behind each."""

    indices: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    tokens: tuple[str, ...] = ()

    @staticmethod
    def from_weights(weights: dict[int, float], tokens: dict[int, str]) -> SparseVector:
        order = sorted(weights)
        return SparseVector(
            np.asarray(order, dtype=np.int64),
            np.asarray([weights[i] for i in order], dtype=np.float64),
            tuple(tokens[i] for i in order),
        )


def family(model: LoadedModel) -> str:
    return str(model.spec.options.get("family", "splade"))


def splade_weights(logits: npt.NDArray[Any], length: int) -> npt.NDArray[np.float32]:
    """(seq, vocab) logits of one input -> (vocab,) weights. log1p and relu are monotone, so
    the max of log(1 + relu(x)) over positions is log(1 + relu(max x))."""
    peak = np.asarray(logits[:length], dtype=np.float32).max(axis=0)
    weights: npt.NDArray[np.float32] = np.log1p(np.maximum(peak, 0)).astype(np.float32)
    return weights


def prepare_texts(
    model: LoadedModel,
    texts: Sequence[str],
    input_type: InputType | None,
    truncate: bool,
    limit: TokenLimit | None = None,
) -> list[tuple[int, Encoded]]:
    """SPLADE embeds queries and documents alike; inputs over the limit are cut there."""
    encoded = encode_texts(model.encoder_for(limit), texts, truncate=truncate)
    return with_lengths(encoded)


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[SparseVector]:
    logits = outputs[0]
    tokenizer = model.encoder.tokenizer
    result = []
    for row, item in enumerate(payloads):
        weights = splade_weights(logits[row], len(item))
        indices = np.flatnonzero(weights).astype(np.int64)
        tokens = tuple(str(tokenizer.id_to_token(int(i))) for i in indices)
        result.append(SparseVector(indices, weights[indices].astype(np.float64), tokens))
    return result


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    texts = ["warm up", "a longer sentence to warm the session " * 4]
    return prepare_texts(model, texts, None, truncate=True)


def check_family(spec: ModelSpec, directory: Path) -> None:
    """SPLADE needs no resources; a row whose family no handler knows lands here: refuse it."""
    name = spec.options.get("family", "splade")
    if name != "splade":
        raise ModelLoadError(
            f"model {spec.name!r}: options.family must be one of {FAMILIES}, got {name!r}"
        )


HANDLER = KindHandler(
    collate=collate, postprocess=postprocess, warmup=warmup, load_resources=check_family
)

"""BGE-M3: one XLM-RoBERTa pass, three outputs (dense, sparse lexical weights, ColBERT).

The converted graph (service/convert/m3_export.py) outputs, in this order: the [CLS] state
(batch, hidden), one relu'd weight per token (batch, seq) and the ColBERT projection of every
token but [CLS] (batch, seq - 1, dim). Each item says which outputs its request wants, so a
dense request carries no multi-vector back and a hybrid request gets all three from one run:

- dense: the [CLS] state (normalised per request by the serving layer, as for dense models);
- sparse: per token id, the largest weight of its positions; ids of the tokenizer's
  cls/eos/pad/unk tokens (``options.unused_token_ids``) and zero weights are dropped;
- late: the ColBERT rows of every token after [CLS] ([SEP] included), L2-normalised.

Queries and documents are embedded alike (BGE-M3 has no markers nor instructions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from service.models.kinds.contract import Feeds, KindHandler
from service.models.kinds.dense import l2_normalize
from service.models.kinds.sparse import SparseVector
from service.models.text import Encoded, encode_texts, pad_batch

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

Output = Literal["dense", "sparse", "late"]
OUTPUTS: tuple[Output, ...] = ("dense", "sparse", "late")
KIND = "m3"


@dataclass(frozen=True, slots=True)
class M3Item:
    """One tokenized input and the outputs its request wants."""

    encoded: Encoded
    outputs: tuple[Output, ...]

    def __len__(self) -> int:
        return len(self.encoded)


@dataclass(frozen=True, slots=True)
class M3Vectors:
    """An input's wanted outputs (None where not asked for)."""

    dense: npt.NDArray[np.float32] | None = None
    sparse: SparseVector | None = None
    late: npt.NDArray[np.float32] | None = None


def is_m3(model: LoadedModel) -> bool:
    return model.spec.kind == KIND


def wanting(
    model: LoadedModel, items: Sequence[tuple[int, Encoded]], *outputs: Output
) -> list[tuple[int, Any]]:
    """Queue items of tokenized texts as they are, or, for a BGE-M3 model, wrapped with the
    outputs asked for (one output asked: its result comes back as that output alone)."""
    if not is_m3(model):
        return list(items)
    return [(length, M3Item(encoded, outputs)) for length, encoded in items]


def prepare(
    model: LoadedModel, texts: Sequence[str], outputs: tuple[Output, ...], truncate: bool
) -> list[tuple[int, M3Item]]:
    encoded = encode_texts(model.encoder, texts, truncate=truncate)
    return [(len(item), M3Item(item, outputs)) for item in encoded]


def collate(model: LoadedModel, payloads: Sequence[M3Item]) -> Feeds:
    feeds = pad_batch([item.encoded for item in payloads], model.encoder.pad_id)
    return {"input_ids": feeds["input_ids"], "attention_mask": feeds["attention_mask"]}


def lexical_weights(
    ids: npt.NDArray[np.int64], weights: npt.NDArray[Any], unused: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Per distinct token id, the largest positive weight of its positions (ids ascending)."""
    keep = (weights > 0) & ~np.isin(ids, unused)
    distinct, where = np.unique(ids[keep], return_inverse=True)
    values = np.zeros(len(distinct), dtype=np.float64)
    np.maximum.at(values, where, weights[keep].astype(np.float64))
    return distinct.astype(np.int64), values


def sparse_vector(model: LoadedModel, ids: npt.NDArray[np.int64], weights: Any) -> SparseVector:
    unused = np.asarray(model.spec.options.get("unused_token_ids", ()), dtype=np.int64)
    indices, values = lexical_weights(ids, weights, unused)
    tokenizer = model.encoder.tokenizer
    return SparseVector(indices, values, tuple(str(tokenizer.id_to_token(int(i))) for i in indices))


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[Any]:
    dense, weights, colbert = outputs[0], outputs[1], outputs[2]
    results: list[Any] = []
    for row, item in enumerate(payloads):
        size = len(item)
        found = M3Vectors(
            dense=np.asarray(dense[row], dtype=np.float32) if "dense" in item.outputs else None,
            sparse=(
                sparse_vector(model, item.encoded.ids, weights[row, :size])
                if "sparse" in item.outputs
                else None
            ),
            late=l2_normalize(colbert[row, : size - 1]) if "late" in item.outputs else None,
        )
        results.append(getattr(found, item.outputs[0]) if len(item.outputs) == 1 else found)
    return results


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    texts = ["warm up", "a somewhat longer sentence to warm the session for longer shapes " * 4]
    return list(prepare(model, texts, OUTPUTS, truncate=True))


HANDLER = KindHandler(collate=collate, postprocess=postprocess, warmup=warmup)

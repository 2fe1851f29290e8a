"""Dense text embeddings: pooling (CLS, mean, last token) over the graph's token states, and
late chunking's mean per chunk of a window (``chunking.Windowed`` payloads).

Normalisation is applied per request in the serving layer, so a batch can mix requests that
ask for raw and for unit vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.errors import InferenceFailed
from service.models.buffers import PadBuffers
from service.models.catalogue import ModelSpec, TokenLimit
from service.models.chunking import Windowed
from service.models.kinds.contract import Feeds, KindHandler, output_index
from service.models.kinds.encoded import InputType, with_lengths
from service.models.kinds.encoded import collate as encoded_collate
from service.models.text import (
    Encoded,
    TaskEncoded,
    encode_texts,
    encode_token_ids,
    pad_batch,
)

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

Vectors = npt.NDArray[np.float32]


def pool(hidden: npt.NDArray[Any], mask: npt.NDArray[np.int64], how: str) -> Vectors:
    """Pool token states (batch, seq, dim) into (batch, dim) with a right-padded mask."""
    states = hidden.astype(np.float32, copy=False)
    if how == "cls":
        return np.asarray(states[:, 0], dtype=np.float32)
    if how == "mean":
        weights = mask[:, :, None].astype(np.float32)
        total = (states * weights).sum(axis=1)
        return np.asarray(total / np.clip(weights.sum(axis=1), 1e-9, None), dtype=np.float32)
    if how == "last":
        last = mask.sum(axis=1) - 1
        return np.asarray(states[np.arange(states.shape[0]), last], dtype=np.float32)
    raise ValueError(f"unknown pooling {how!r}")


def l2_normalize(vectors: Vectors) -> Vectors:
    """Rows (or a single vector) scaled to unit length; all-zero rows stay zero. On the event
    loop for every request: four numpy calls, about 4 us for one MiniLM vector against 6 with
    np.linalg.norm and np.clip."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.einsum("...i,...i->...", vectors, vectors))[..., None]
    unit: Vectors = vectors / np.maximum(norms, np.float32(1e-12))
    return unit


def with_prefix(
    model: LoadedModel, texts: Sequence[str], input_type: InputType | None
) -> list[str]:
    prefix = {"query": model.spec.query_prefix, "document": model.spec.document_prefix}.get(
        input_type or "", ""
    )
    return [prefix + text for text in texts] if prefix else list(texts)


def prepare_texts(
    model: LoadedModel,
    texts: Sequence[str],
    input_type: InputType | None,
    truncate: bool,
    limit: TokenLimit | None = None,
) -> list[tuple[int, Encoded]]:
    encoder = model.encoder_for(limit)
    encoded = encode_texts(encoder, with_prefix(model, texts, input_type), truncate=truncate)
    task = model.spec.options.get("tasks", {}).get(input_type or "")
    if task is not None:  # the graph's task input for this side (jina v3: queries 0)
        encoded = [TaskEncoded(item.ids, item.type_ids, int(task)) for item in encoded]
    return with_lengths(encoded)


def prepare_ids(
    model: LoadedModel,
    inputs: Sequence[Sequence[int]],
    truncate: bool,
    limit: TokenLimit | None = None,
) -> list[tuple[int, Encoded]]:
    encoded = encode_token_ids(model.encoder_for(limit), inputs, truncate=truncate)
    return with_lengths(encoded)


def collate(model: LoadedModel, payloads: Sequence[Encoded]) -> Feeds:
    fixed = model.spec.options.get("pad_to")
    if fixed is not None:  # SigLIP pools the last position: every input padded alike
        return dict(pad_batch(payloads, model.encoder.pad_id, int(fixed)))
    if isinstance(model.resources, PadBuffers):  # reused per worker thread (buffers.py)
        return dict(model.resources.pad(payloads, model.encoder.pad_id))
    return encoded_collate(model, payloads)


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[Vectors]:
    pooled_output = model.spec.options.get("pooled_output")
    if pooled_output is not None:
        vectors = np.asarray(outputs[output_index(model, pooled_output)], dtype=np.float32)
    elif outputs[0].ndim == 2:  # the graph pools itself (converted with pooling in the graph)
        vectors = np.asarray(outputs[0], dtype=np.float32)
    else:
        vectors = pool(outputs[0], feeds["attention_mask"], model.spec.pooling)
    rows: list[Any] = list(vectors[: len(payloads)])  # rows beyond them only rounded the shape up
    for row, item in enumerate(payloads):
        if isinstance(item, Windowed):
            rows[row] = pool_spans(model, outputs[0], row, item.spans)
    return rows


def pool_spans(
    model: LoadedModel, states: npt.NDArray[Any], row: int, spans: Sequence[tuple[int, int]]
) -> Vectors:
    """Late chunking: the mean token state of each span [a, b) of one window, (spans, dim)."""
    if states.ndim != 3:
        raise InferenceFailed(
            f"model {model.name!r} pools inside its graph: late chunking needs token states"
        )
    window = states[row].astype(np.float32, copy=False)
    return np.stack([window[a:b].mean(axis=0) for a, b in spans]).astype(np.float32)


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    texts = ["warm up", "a somewhat longer sentence to warm the session for longer shapes " * 4]
    return prepare_texts(model, texts, None, truncate=True)


def padding_buffers(spec: ModelSpec, directory: Path) -> PadBuffers:
    return PadBuffers(cap=spec.max_length)


HANDLER = KindHandler(
    collate=collate, postprocess=postprocess, warmup=warmup, load_resources=padding_buffers
)

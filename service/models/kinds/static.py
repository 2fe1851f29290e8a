"""Static embeddings (model2vec, minishlab's potion models): a table of token vectors and no
network. A text is tokenized without special tokens and cut at max_length; unknown tokens
are dropped; its vector is the sum of its tokens' rows (each scaled by its weight, through a
shared row where the vocabulary is quantized), normalised in the serving layer: the mean's
direction, as model2vec and FastEmbed give it.

The table stands in for an ONNX session: a StaticRunner runs a padded batch of token ids in
the model's batcher like a graph would, so every dense route serves these models unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.errors import ModelLoadError
from service.models.catalogue import ModelSpec
from service.models.kinds import dense
from service.models.kinds.contract import KindHandler

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel


@dataclass(frozen=True)
class StaticTable:
    embeddings: npt.NDArray[np.float32]  # (rows, dim)
    weights: npt.NDArray[np.float32] | None  # (vocabulary,): a scale per token id
    mapping: npt.NDArray[np.int64] | None  # (vocabulary,): the row of each token id
    unknown_id: int | None


def unknown_token_id(tokenizer_file: Path) -> int | None:
    """The tokenizer's unknown token id (a Unigram model names it by id, others by token)."""
    model = json.loads(tokenizer_file.read_text(encoding="utf-8"))["model"]
    if model.get("type") == "Unigram":
        found = model.get("unk_id")
        return int(found) if found is not None else None
    vocab, token = model.get("vocab"), model.get("unk_token")
    if token and isinstance(vocab, dict) and token in vocab:
        return int(vocab[token])
    return None


def load_table(spec: ModelSpec, directory: Path) -> StaticTable:
    from safetensors.numpy import load_file

    path = directory / spec.source.model_file
    tensors = load_file(str(path))
    if "embeddings" not in tensors:
        raise ModelLoadError(f"model {spec.name!r}: {path} has no `embeddings` tensor")
    embeddings = np.ascontiguousarray(tensors["embeddings"], dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != spec.dim:
        raise ModelLoadError(
            f"model {spec.name!r}: embeddings of shape {embeddings.shape}, "
            f"expected (rows, {spec.dim})"
        )
    weights, mapping = tensors.get("weights"), tensors.get("mapping")
    return StaticTable(
        embeddings,
        None if weights is None else np.asarray(weights, dtype=np.float32),
        None if mapping is None else np.asarray(mapping, dtype=np.int64),
        unknown_token_id(directory / "tokenizer.json"),
    )


class StaticRunner:
    """A batch of padded token ids -> the sum of each row's known tokens' vectors."""

    input_names = ("input_ids", "attention_mask")
    output_names = ("sentence_embedding",)

    def __init__(self, table: StaticTable) -> None:
        self.table = table

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        table = self.table
        ids = feeds["input_ids"]
        keep = feeds["attention_mask"].astype(bool)
        if table.unknown_id is not None:
            keep &= ids != table.unknown_id
        scale = keep.astype(np.float32)
        if table.weights is not None:
            scale *= table.weights[ids]
        rows = ids if table.mapping is None else table.mapping[ids]
        sums = np.einsum("bs,bsd->bd", scale, table.embeddings[rows], dtype=np.float32)
        return [np.asarray(sums, dtype=np.float32)]


def static_runner(model: LoadedModel) -> StaticRunner:
    table: StaticTable = model.resources
    return StaticRunner(table)


HANDLER = KindHandler(
    collate=dense.collate,
    postprocess=dense.postprocess,
    warmup=dense.warmup,
    needs_session=False,
    load_resources=load_table,
    runner=static_runner,
    special_tokens=False,
)

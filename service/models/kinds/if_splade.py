"""Inference-free SPLADE (OpenSearch's doc-v3 models): one model name, two encoders, picked by
``input_type``. Documents go through the MLM graph: weight per vocabulary id = log(1 +
log(1 + relu(max logit over the unmasked positions))), special tokens' ids zeroed. Queries run
no model: each distinct non-special token of the query gets its IDF from the repository's
``idf.json``; tokens without one are left out. Scored by dot product.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from service.errors import ModelLoadError
from service.models.catalogue import ModelSpec
from service.models.kinds.contract import Feeds, KindHandler
from service.models.kinds.encoded import collate
from service.models.kinds.sparse import SparseVector, warmup
from service.models.text import Encoded

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

IDF_FILE = "idf.json"


@dataclass(frozen=True)
class IdfTable:
    idf: dict[int, float]  # token id -> IDF, for the tokens idf.json names
    special_ids: npt.NDArray[np.int64]  # never weighted, on either side


def load_idf(spec: ModelSpec, directory: Path) -> IdfTable:
    path = directory / IDF_FILE
    if not path.is_file():
        raise ModelLoadError(f"model {spec.name!r}: {path} is missing")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    weights: dict[str, float] = json.loads(path.read_text(encoding="utf-8"))
    special = [i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special]
    return IdfTable(
        {vocab[token]: float(value) for token, value in weights.items() if token in vocab},
        np.asarray(sorted(special), dtype=np.int64),
    )


def table_of(model: LoadedModel) -> IdfTable:
    table: IdfTable = model.resources
    return table


def document_weights(logits: npt.NDArray[Any], length: int, special: npt.NDArray[np.int64]) -> Any:
    peak = np.asarray(logits[:length], dtype=np.float32).max(axis=0)
    weights = np.log1p(np.log1p(np.maximum(peak, 0))).astype(np.float32)
    weights[special] = 0
    return weights


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[SparseVector]:
    special = table_of(model).special_ids
    tokenizer = model.encoder.tokenizer
    result = []
    for row, item in enumerate(payloads):
        weights = document_weights(outputs[0][row], len(item), special)
        indices = np.flatnonzero(weights).astype(np.int64)
        tokens = tuple(str(tokenizer.id_to_token(int(i))) for i in indices)
        result.append(SparseVector(indices, weights[indices].astype(np.float64), tokens))
    return result


def query_vectors(model: LoadedModel, encoded: Sequence[Encoded]) -> list[SparseVector]:
    """Queries: the IDF of each distinct non-special token, no inference (blocking: call it
    in a worker thread)."""
    table = table_of(model)
    special = set(table.special_ids.tolist())
    tokenizer = model.encoder.tokenizer
    result = []
    for item in encoded:
        ids = {int(i) for i in item.ids} - special
        weights = {i: table.idf[i] for i in ids if i in table.idf}
        names = {i: str(tokenizer.id_to_token(i)) for i in weights}
        result.append(SparseVector.from_weights(weights, names))
    return result


HANDLER = KindHandler(
    query_vectors=query_vectors,
    collate=collate,
    postprocess=postprocess,
    warmup=warmup,
    load_resources=load_idf,
    extra_files=(IDF_FILE,),
)

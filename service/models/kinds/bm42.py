"""BM42, as FastEmbed's ``Qdrant/bm42-all-minilm-l6-v2-attentions`` computes it.

Documents: the [CLS] row of the last layer's attention, averaged over heads, weighs each
token; word pieces are merged into words (their weights summed), stopwords and punctuation
dropped, words Snowball stemmed; a stem keeps its largest weight ``w`` and gets the value
``log(1 + w) ** alpha`` at index ``abs(murmur3_32(stem))``. Queries run no inference: each
distinct stem weighs 1. IDF is left to the search engine (``modifier: idf`` in Qdrant).
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.models.catalogue import ModelSpec
from service.models.kinds.bm25 import stemmer, token_id
from service.models.kinds.contract import Feeds, KindHandler
from service.models.kinds.encoded import collate
from service.models.kinds.sparse import SparseVector, warmup  # SPLADE's: the same texts
from service.models.text import Encoded

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

Word = tuple[str, list[int]]  # a merged word and the positions of its pieces
PUNCTUATION = frozenset(string.punctuation)


@dataclass(frozen=True)
class Bm42Resources:
    stopwords: frozenset[str]
    language: str
    alpha: float
    attention_output: str


def load_resources(spec: ModelSpec, directory: Path) -> Bm42Resources:
    path = directory / "stopwords.txt"
    stopwords = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return Bm42Resources(
        stopwords=frozenset(stopwords),
        language=str(spec.options.get("language", "english")),
        alpha=float(spec.options.get("alpha", 0.5)),
        attention_output=str(spec.options.get("attention_output", "attention_6")),
    )


def merge_pieces(
    pieces: Iterable[tuple[int, str]], special: frozenset[str], prefix: str
) -> list[Word]:
    """Join word pieces (``##`` continuations) into words; special tokens are skipped."""
    words: list[Word] = []
    current, positions = "", []
    for position, piece in pieces:
        if piece in special:
            continue
        if piece.startswith(prefix):
            current += piece[len(prefix) :]
            positions.append(position)
            continue
        if current:
            words.append((current, positions))
            positions = []
        current = piece
        positions.append(position)
    if current:
        words.append((current, positions))
    return words


def stemmed_words(model: LoadedModel, pieces: Iterable[tuple[int, str]]) -> list[Word]:
    resources: Bm42Resources = model.resources
    tokenizer = model.encoder.tokenizer
    special = frozenset(
        token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special
    )
    prefix = str(tokenizer.model.continuing_subword_prefix)
    snowball = stemmer(resources.language)
    return [
        (str(snowball.stem_word(word)), positions)
        for word, positions in merge_pieces(pieces, special, prefix)
        if word not in resources.stopwords and word not in PUNCTUATION
    ]


def document_vector(model: LoadedModel, item: Encoded, weights: npt.NDArray[Any]) -> SparseVector:
    tokenizer = model.encoder.tokenizer
    pieces = [(i, str(tokenizer.id_to_token(int(t)))) for i, t in enumerate(item.ids)]
    best: dict[str, float] = {}
    for stem, positions in stemmed_words(model, pieces):
        weight = sum(weights[p] for p in positions)
        best[stem] = max(best.get(stem, 0), weight)
    alpha = model.resources.alpha
    values = {token_id(stem): math.log(1.0 + value) ** alpha for stem, value in best.items()}
    return SparseVector.from_weights(values, {token_id(stem): stem for stem in best})


def query_vectors(model: LoadedModel, encoded: Sequence[Encoded]) -> list[SparseVector]:
    """Queries: 1 per distinct stem, no inference (blocking: call it in a worker thread)."""
    tokenizer = model.encoder.tokenizer
    result = []
    for item in encoded:
        pieces = [(i, str(tokenizer.id_to_token(int(t)))) for i, t in enumerate(item.ids)]
        names = {token_id(stem): stem for stem, _ in stemmed_words(model, pieces)}
        result.append(SparseVector.from_weights(dict.fromkeys(names, 1.0), names))
    return result


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[SparseVector]:
    names = model.runners[0].output_names
    attention = outputs[names.index(model.resources.attention_output)]
    pooled = np.mean(attention[:, :, 0], axis=1) * feeds["attention_mask"]
    return [document_vector(model, item, pooled[row]) for row, item in enumerate(payloads)]


HANDLER = KindHandler(
    query_vectors=query_vectors,
    collate=collate,
    postprocess=postprocess,
    warmup=warmup,
    load_resources=load_resources,
)

"""BM25 as sparse vectors, as FastEmbed's ``Qdrant/bm25`` computes them; no ONNX session.

Text is lowercased and split on non-word characters; tokens that are punctuation, stopwords
of the language or longer than ``token_max_length`` are dropped; the rest are Snowball
stemmed. A document's weight per stem is BM25's term-frequency part
``tf * (k + 1) / (tf + k * (1 - b + b * len / avg_len))``; a query gets 1 per distinct stem.
The index is ``abs(murmur3_32(stem))``. IDF is left to the search engine (Qdrant's sparse
index with ``modifier: idf``).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mmh3
from py_rust_stemmers import SnowballStemmer

from service.errors import InvalidInput
from service.models.catalogue import ModelSpec
from service.models.kinds.contract import KindHandler
from service.models.kinds.encoded import InputType
from service.models.kinds.sparse import SparseVector

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

LANGUAGES = (
    "arabic",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
)
NON_WORD = re.compile(r"[^\w\s]", flags=re.UNICODE)
_SPLIT = re.compile(r"[^\w]")


@dataclass(frozen=True)
class Bm25Params:
    k: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0
    token_max_length: int = 40

    @classmethod
    def from_options(cls, options: Mapping[str, Any], avg_len: float = 256.0) -> Bm25Params:
        """The catalogue row's ``k``, ``b``, ``avg_len`` and ``token_max_length``."""
        default = cls()
        return cls(
            k=float(options.get("k", default.k)),
            b=float(options.get("b", default.b)),
            avg_len=float(options.get("avg_len", avg_len)),
            token_max_length=int(options.get("token_max_length", default.token_max_length)),
        )

    def term_weight(self, count: int, length: int) -> float:
        """BM25's term-frequency part for a term seen `count` times in `length` terms."""
        norm = self.k * (1 - self.b + self.b * length / self.avg_len)
        return count * (self.k + 1) / (count + norm)


@dataclass(frozen=True)
class Bm25Resources:
    params: Bm25Params
    default_language: str
    stopwords: Mapping[str, frozenset[str]]  # language -> stopwords (none if no file)


@cache
def punctuation() -> frozenset[str]:
    """Every Unicode character of a punctuation category (P*)."""
    return frozenset(
        c for c in map(chr, range(sys.maxunicode)) if unicodedata.category(c).startswith("P")
    )


@cache
def stemmer(language: str) -> SnowballStemmer:
    return SnowballStemmer(language)


def token_id(token: str) -> int:
    return abs(int(mmh3.hash(token)))


def words(text: str) -> list[str]:
    """FastEmbed's simple tokenizer, after it replaced non-word, non-space characters."""
    return _SPLIT.sub(" ", NON_WORD.sub(" ", text).lower()).split()


def stems(text: str, language: str, resources: Bm25Resources) -> list[str]:
    stop = resources.stopwords.get(language, frozenset())
    limit = resources.params.token_max_length
    marks = punctuation()
    snowball = stemmer(language)
    result = []
    for word in words(text):
        if word in marks or word.lower() in stop or len(word) > limit:
            continue
        stem = str(snowball.stem_word(word.lower()))
        if stem:
            result.append(stem)
    return result


def document_weights(tokens: Sequence[str], params: Bm25Params) -> SparseVector:
    weights: dict[int, float] = {}
    names: dict[int, str] = {}
    for token, count in Counter(tokens).items():
        index = token_id(token)
        weights[index] = params.term_weight(count, len(tokens))
        names[index] = token
    return SparseVector.from_weights(weights, names)


def query_weights(tokens: Sequence[str]) -> SparseVector:
    names = {token_id(token): token for token in tokens}
    return SparseVector.from_weights(dict.fromkeys(names, 1.0), names)


def check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise InvalidInput(
            f"language {language!r} is not supported by BM25; supported: {', '.join(LANGUAGES)}",
            param="language",
        )


def embed(
    model: LoadedModel, texts: Sequence[str], input_type: InputType | None, language: str | None
) -> list[SparseVector]:
    """Embed texts (blocking but light: call it in a worker thread). Documents by default."""
    resources: Bm25Resources = model.resources
    language = language or resources.default_language
    check_language(language)
    tokens = [stems(text, language, resources) for text in texts]
    if input_type == "query":
        return [query_weights(t) for t in tokens]
    return [document_weights(t, resources.params) for t in tokens]


def load_resources(spec: ModelSpec, directory: Path) -> Bm25Resources:
    """Stopword files ``<language>.txt`` of the model directory (a language without one has
    no stopwords, as in FastEmbed) and the parameters from the catalogue's options."""
    options = spec.options
    params = Bm25Params.from_options(options)
    language = str(options.get("language", "english"))
    check_language(language)
    stopwords = {
        lang: frozenset((directory / f"{lang}.txt").read_text(encoding="utf-8").splitlines())
        for lang in LANGUAGES
        if (directory / f"{lang}.txt").is_file()
    }
    punctuation()
    return Bm25Resources(params, language, stopwords)


def _unused(*_: Any) -> Any:
    raise RuntimeError("BM25 runs no inference session")


HANDLER = KindHandler(
    collate=_unused,
    postprocess=_unused,
    warmup=lambda model: [],
    needs_text=False,
    needs_session=False,
    load_resources=load_resources,
)

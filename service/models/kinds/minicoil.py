"""miniCOIL, as FastEmbed's ``Qdrant/minicoil-v1`` computes it: BM25 whose words carry a
small vector of their meaning in context.

The graph (jina-embeddings-v2-small-en) gives token states. Word pieces are joined into words
(``##`` continuations); a word that is no stopword resolves to an entry of the miniCOIL
vocabulary as it is, through the vocabulary's stem table as it is, or through the table by
its Snowball stem. Per entry, the states of all its positions are averaged and projected by
the entry's own matrix (``minicoil.triplet.model.npy``: entries + 1 rows of hidden x dims;
row 0 is the unknown word's), then ``tanh``: its meaning, ``dims`` wide (4 in v1).

A vocabulary word takes ``dims`` indices from ``id * dims``, its meaning L2-normalised; other
words (punctuation, specials and stopwords dropped, split on non-word characters, stemmed)
take one index from a hash above the vocabulary's range, as BM25 does. Documents scale each
word by BM25's term-frequency part (``k``, ``b``, ``avg_len``, length counted over the kept
words); queries do not, and an unknown word weighs 1. IDF is left to the search engine
(Qdrant's ``modifier: idf``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.errors import ModelLoadError
from service.models.catalogue import ModelSpec, TokenLimit
from service.models.kinds.bm25 import NON_WORD, Bm25Params, punctuation, stemmer, token_id
from service.models.kinds.bm42 import merge_pieces
from service.models.kinds.contract import Feeds, KindHandler
from service.models.kinds.encoded import InputType
from service.models.kinds.sparse import SparseVector
from service.models.text import Encoded, encode_texts, pad_batch

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

WEIGHTS_FILE = "minicoil.triplet.model.npy"
VOCAB_FILE = "minicoil.triplet.model.vocab"
STOPWORDS_FILE = "stopwords.txt"
PIECE_PREFIX = "##"
SPECIAL_WORDS = frozenset({"[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"})
INT32_MAX = 2**31 - 1
BUCKET = 32000  # unknown words' hashes start two buckets past the vocabulary's indices


@dataclass(frozen=True)
class MinicoilResources:
    ids: dict[str, int]  # vocabulary word -> id, from 1 (0: no entry)
    words: tuple[str, ...]  # id - 1 -> word
    stems: dict[str, str]  # stem -> the vocabulary word it stands for
    weights: npt.NDArray[np.float32]  # (entries + 1, hidden, dims)
    stopwords: frozenset[str]
    unwanted: frozenset[str]  # never an unknown word: punctuation, specials, stopwords
    language: str
    params: Bm25Params  # BM25's term-frequency part (avg_len 150) and word length limit

    @property
    def dims(self) -> int:
        return int(self.weights.shape[2])

    @property
    def unknown_shift(self) -> int:
        return ((len(self.ids) + 1) * self.dims // BUCKET + 2) * BUCKET


@dataclass(frozen=True, slots=True)
class MinicoilItem:
    """One tokenized text and its side: queries and documents are weighed differently."""

    encoded: Encoded
    query: bool

    def __len__(self) -> int:
        return len(self.encoded)


@dataclass
class Word:
    """A word of one text: its vocabulary id (-1: unknown), count and meaning (if known)."""

    word_id: int
    count: int
    meaning: npt.NDArray[np.float32] | None = None


def load_resources(spec: ModelSpec, directory: Path) -> MinicoilResources:
    for name in (WEIGHTS_FILE, VOCAB_FILE):
        if not (directory / name).is_file():
            raise ModelLoadError(f"model {spec.name!r}: {directory / name} is missing")
    try:
        vocab = json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8"))
        words = tuple(str(word) for word in vocab["vocab"])
        stems = {str(stem): str(word) for stem, word in vocab["stem_mapping"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelLoadError(
            f"model {spec.name!r}: {VOCAB_FILE} is not a JSON object of 'vocab' (a list of "
            f"words) and 'stem_mapping' (stem to word): {error!r}"
        ) from error
    weights = np.load(directory / WEIGHTS_FILE, mmap_mode="r")
    if weights.ndim != 3 or weights.shape[0] != len(words) + 1:
        raise ModelLoadError(
            f"model {spec.name!r}: {WEIGHTS_FILE} has shape {weights.shape}; expected "
            f"({len(words) + 1}, hidden, dims) for {len(words)} words"
        )
    path = directory / STOPWORDS_FILE
    stopwords = frozenset(path.read_text(encoding="utf-8").splitlines() if path.is_file() else ())
    options = spec.options
    language = str(options.get("language", "english"))
    stemmer(language)  # an unknown language fails here, at load
    return MinicoilResources(
        ids={word: i + 1 for i, word in enumerate(words)},
        words=words,
        stems=stems,
        weights=weights,
        stopwords=stopwords,
        unwanted=punctuation() | SPECIAL_WORDS | stopwords,
        language=language,
        params=Bm25Params.from_options(options, avg_len=150.0),
    )


def prepare_texts(
    model: LoadedModel,
    texts: Sequence[str],
    input_type: InputType | None,
    truncate: bool,
    limit: TokenLimit | None = None,
) -> list[tuple[int, MinicoilItem]]:
    encoded = encode_texts(model.encoder_for(limit), texts, truncate=truncate)
    query = input_type == "query"
    return [(len(item), MinicoilItem(item, query)) for item in encoded]


def collate(model: LoadedModel, payloads: Sequence[MinicoilItem]) -> Feeds:
    return dict(pad_batch([item.encoded for item in payloads], model.encoder.pad_id))


def vocabulary_id(resources: MinicoilResources, word: str) -> int:
    """The word's vocabulary id: as written, through the stem table as written, or through
    it by its stem; 0 for a stopword or a word the vocabulary lacks."""
    if word in resources.stopwords:
        return 0
    if word in resources.ids:
        return resources.ids[word]
    stems = resources.stems
    target = stems[word] if word in stems else stems.get(stem_of(resources, word))
    return resources.ids.get(target, 0) if target is not None else 0


def stem_of(resources: MinicoilResources, word: str) -> str:
    return str(stemmer(resources.language).stem_word(word))


def text_words(
    resources: MinicoilResources, pieces: Sequence[str], states: npt.NDArray[Any]
) -> dict[str, Word]:
    """The text's words, keyed as FastEmbed keys them: vocabulary words (ascending id) by
    their vocabulary form, each with its count and meaning; then the others as written."""
    positions: dict[int, list[int]] = {}
    counts: dict[int, int] = {}
    unknown: dict[str, int] = {}
    for word, places in merge_pieces(enumerate(pieces), frozenset(), PIECE_PREFIX):
        found = vocabulary_id(resources, word)
        if found:
            positions.setdefault(found, []).extend(places)
            counts[found] = counts.get(found, 0) + 1
        else:
            unknown[word] = unknown.get(word, 0) + 1
    result: dict[str, Word] = {}
    for found in sorted(positions):
        mean = np.asarray(states[positions[found]], dtype=np.float32).mean(axis=0)
        meaning = np.tanh(mean @ np.asarray(resources.weights[found], dtype=np.float32))
        result[resources.words[found - 1]] = Word(found, counts[found], meaning)
    for word, count in unknown.items():
        result[word] = Word(-1, count)
    return result


def kept_words(resources: MinicoilResources, words: dict[str, Word]) -> dict[str, Word]:
    """Vocabulary words as they are; unknown ones split on non-word characters and stemmed,
    those unwanted or over `token_max_length` (40) characters dropped, equal stems merged
    (into a vocabulary word of that spelling too)."""
    kept: dict[str, Word] = {}
    for word, entry in words.items():
        if entry.word_id > 0:
            kept[word] = entry
            continue
        if word in resources.unwanted:
            continue
        for part in NON_WORD.sub(" ", word).split():
            stem = stem_of(resources, part)
            if len(stem) > resources.params.token_max_length or stem in resources.unwanted:
                continue
            if stem in kept:
                kept[stem].count += entry.count
            else:
                kept[stem] = Word(entry.word_id, entry.count, entry.meaning)
    return kept


def unit(meaning: npt.NDArray[np.float32]) -> list[float]:
    values = [float(v) for v in meaning]
    norm = math.sqrt(sum(v * v for v in values))
    return values if norm < 1e-8 else [v / norm for v in values]


def unknown_index(word: str, shift: int) -> int:
    return shift + token_id(word) % (INT32_MAX - shift)


def sparse_vector(
    resources: MinicoilResources, words: dict[str, Word], query: bool
) -> SparseVector:
    kept = kept_words(resources, words)
    length = sum(entry.count for entry in kept.values())
    dims, shift = resources.dims, resources.unknown_shift
    weights: dict[int, float] = {}
    names: dict[int, str] = {}
    for word, entry in kept.items():
        tf = 1.0 if query else resources.params.term_weight(entry.count, length)
        if entry.meaning is None:
            index = unknown_index(word, shift)
            weights[index], names[index] = tf, word
            continue
        for dim, value in enumerate(unit(entry.meaning)):
            index = entry.word_id * dims + dim
            weights[index], names[index] = value * tf, f"{word}#{dim}"
    return SparseVector.from_weights(weights, names)


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[SparseVector]:
    resources: MinicoilResources = model.resources
    tokenizer = model.encoder.tokenizer
    result = []
    for row, item in enumerate(payloads):
        pieces = [str(tokenizer.id_to_token(int(t))) for t in item.encoded.ids]
        words = text_words(resources, pieces, outputs[0][row, : len(item)])
        result.append(sparse_vector(resources, words, item.query))
    return result


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    texts = ["warm up", "a longer sentence to warm the session " * 4]
    return [
        *prepare_texts(model, texts, "document", truncate=True),
        *prepare_texts(model, texts[:1], "query", truncate=True),
    ]


HANDLER = KindHandler(
    prepare_texts=prepare_texts,
    collate=collate,
    postprocess=postprocess,
    warmup=warmup,
    load_resources=load_resources,
    extra_files=(WEIGHTS_FILE, VOCAB_FILE),
)

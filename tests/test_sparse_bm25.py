"""BM25 served from data/bm25 (no inference session) against FastEmbed 0.9.1's Bm25 pointed
at the same directory: bench queries and passages, as documents and as queries, in several
languages; identical indices and values within 1e-6."""

from __future__ import annotations

from collections.abc import Iterator

import mmh3
import pytest
from fastapi.testclient import TestClient
from fastembed.sparse.bm25 import Bm25

from tests.conftest import serving
from tests.sparse_fixtures import BM25_DATA, assert_same, bench

MODEL = "Qdrant/bm25"
GERMAN = [
    "Die schnellen braunen Füchse sprangen über die faulen Hunde.",
    "Häuser, Bäume und Straßen der Städte",
    "und der die das",
]
FRENCH = ["Les enfants jouaient dans les jardins publics.", "nous sommes allés au marché"]


@pytest.fixture(scope="module")
def bm25_client() -> Iterator[TestClient]:
    with serving(models=[str(BM25_DATA)]) as client:
        yield client


def reference(language: str = "english") -> Bm25:
    return Bm25(MODEL, specific_model_path=str(BM25_DATA), local_files_only=True, language=language)


def served(client: TestClient, texts: list[str], input_type: str, **extra: object) -> list[dict]:
    result = []
    for start in range(0, len(texts), 1000):  # the service takes 2048 inputs per request
        response = client.post(
            "/embed/sparse",
            json={
                "model": MODEL,
                "inputs": texts[start : start + 1000],
                "input_type": input_type,
                **extra,
            },
        )
        assert response.status_code == 200, response.text
        result += response.json()["embeddings"]
    return result


def test_documents_match_fastembed(bm25_client: TestClient) -> None:
    long_text = " ".join(bench("passages.jsonl", 400, 50))  # BM25 reads all of it: no limit
    texts = bench("queries.jsonl", 300, 7) + bench("passages.jsonl", 400, 50) + [long_text]
    expected = [e.as_dict() for e in reference().embed(texts)]
    assert sum(len(e) for e in expected) > 5000
    assert_same(served(bm25_client, texts, "document"), expected)


def test_queries_match_fastembed(bm25_client: TestClient) -> None:
    texts = bench("queries.jsonl", 2670) + bench("passages.jsonl", 100, 200)
    expected = [e.as_dict() for e in reference().query_embed(texts)]
    got = served(bm25_client, texts, "query")
    assert_same(got, expected)
    assert all(set(v["values"]) <= {1.0} for v in got)


@pytest.mark.parametrize(("language", "texts"), [("german", GERMAN), ("french", FRENCH)])
def test_other_languages_match_fastembed(
    bm25_client: TestClient, language: str, texts: list[str]
) -> None:
    for input_type, embed in (("document", "embed"), ("query", "query_embed")):
        expected = [e.as_dict() for e in getattr(reference(language), embed)(texts)]
        assert_same(served(bm25_client, texts, input_type, language=language), expected)


def test_tokens_are_the_stems_behind_the_indices(bm25_client: TestClient) -> None:
    [vector] = served(
        bm25_client, ["Running runners ran; the RUNNING man"], "document", return_tokens=True
    )
    assert sorted(vector["tokens"]) == ["man", "ran", "run", "runner"]
    assert vector["indices"] == [abs(mmh3.hash(t)) for t in vector["tokens"]]
    # "run" appears twice among 5 kept tokens: tf part of BM25 with k=1.2, b=0.75, avg_len=256
    norm = 1.2 * (1 - 0.75 + 0.75 * 5 / 256)
    run = vector["values"][vector["tokens"].index("run")]
    assert run == pytest.approx(2 * 2.2 / (2 + norm), abs=1e-12)


def test_empty_stopword_and_punctuation_inputs_give_empty_vectors(bm25_client: TestClient) -> None:
    got = served(bm25_client, ["", "the and of", "?!... ,;", "cats"], "document")
    assert [v["indices"] for v in got[:3]] == [[], [], []]
    assert len(got[3]["indices"]) == 1


def test_unknown_language_is_400_naming_the_supported_ones(bm25_client: TestClient) -> None:
    response = bm25_client.post(
        "/embed/sparse", json={"model": MODEL, "inputs": ["x"], "language": "klingon"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "language" and "english" in error["message"]
    assert "turkish" in error["message"]


def test_usage_counts_words(bm25_client: TestClient) -> None:
    body = bm25_client.post("/embed/sparse", json={"model": MODEL, "inputs": ["a b, c", "d"]})
    assert body.json()["usage"] == {"prompt_tokens": 4, "total_tokens": 4}

"""BGE-M3 against FlagEmbedding's BGEM3FlagModel: a tiny random XLM-RoBERTa with random heads
in FlagEmbedding's layout, converted by the project's converter (which finds the layout by
itself) and served; its dense, sparse and ColBERT outputs on every route, and all three from
one run of the model on /embed/hybrid."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests import m3_models
from tests.conftest import engine_registry, serving
from tests.envelope import error_of
from tests.exporting import EXPORT_WARNINGS
from tests.late_models import Built

pytestmark = EXPORT_WARNINGS
NAME = m3_models.NAME
TEXTS = [
    "Hello world, the cat sat on the mat.",
    "what is the sun? the sun is a star, the star is red",
    "blue sea",
    "zebra crossing sky",  # words outside the vocabulary: <unk>, which has no lexical weight
]


@pytest.fixture(scope="module")
def m3(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return m3_models.built(tmp_path_factory.getbasetemp() / "m3-models")


@pytest.fixture(scope="module")
def oracle(m3: Built) -> dict[str, Any]:
    """FlagEmbedding's three outputs of TEXTS, from the checkpoint directory."""
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(str(m3.reference), use_fp16=False, devices="cpu")
    found: dict[str, Any] = model.encode(
        TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    return found


@pytest.fixture(scope="module")
def client(m3: Built) -> Iterator[TestClient]:
    with serving(models=[str(m3.directory)]) as test_client:
        yield test_client


def cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    assert got.shape == expected.shape
    norms = np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1)
    return np.asarray((got * expected).sum(axis=-1) / norms)


def assert_lexical(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got["indices"] == sorted(int(i) for i in expected)
    values = np.asarray([float(expected[str(i)]) for i in got["indices"]])
    np.testing.assert_allclose(got["values"], values, rtol=1e-4)


def test_converter_finds_flagembedding_layout(m3: Built) -> None:
    spec = m3.metadata["spec"]
    assert (spec["name"], spec["kind"], spec["dim"]) == (NAME, "m3", 32)
    assert spec["options"] == {"unused_token_ids": [0, 1, 2, 3]}  # <s> <pad> </s> <unk>
    assert m3.metadata["export"]["outputs"] == ["dense_vecs", "sparse_vecs", "colbert_vecs"]
    assert m3.metadata["export"]["max_abs_error_vs_torch"] < 1e-5


def test_dense_matches_flagembedding(client: TestClient, oracle: dict[str, Any]) -> None:
    body = client.post("/embed/dense", json={"inputs": TEXTS, "model": NAME}).json()
    got = np.asarray(body["embeddings"])
    assert np.max(np.triu(got @ got.T, k=1)) < 0.99  # the texts' vectors tell them apart
    assert cosines(got, oracle["dense_vecs"]).min() >= 0.99999
    np.testing.assert_allclose(got, oracle["dense_vecs"], atol=1e-5)
    openai = client.post("/v1/embeddings", json={"input": TEXTS, "model": NAME}).json()
    np.testing.assert_allclose([d["embedding"] for d in openai["data"]], got, atol=1e-6)
    cohere = client.post("/v2/embed", json={"texts": TEXTS, "model": NAME}).json()
    np.testing.assert_allclose(cohere["embeddings"]["float"], got, atol=1e-6)


def test_sparse_matches_flagembedding(client: TestClient, oracle: dict[str, Any]) -> None:
    body = client.post(
        "/embed/sparse", json={"inputs": TEXTS, "model": NAME, "return_tokens": True}
    ).json()
    for got, expected in zip(body["embeddings"], oracle["lexical_weights"], strict=True):
        assert_lexical(got, expected)
    assert body["embeddings"][3]["tokens"] == ["sky"]  # <unk> has no weight
    assert "the" in body["embeddings"][1]["tokens"]  # repeated: its largest weight


def test_colbert_matches_flagembedding(client: TestClient, oracle: dict[str, Any]) -> None:
    body = client.post(
        "/embed/late", json={"inputs": TEXTS, "model": NAME, "return_tokens": True}
    ).json()
    assert body["dim"] == 32
    for item, expected in zip(body["embeddings"], oracle["colbert_vecs"], strict=True):
        got = np.asarray(item["embedding"])
        assert cosines(got, expected).min() >= 0.99999
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert body["embeddings"][2]["token_strings"] == ["blue", "sea", "</s>"]  # all but <s>
    queries = client.post(
        "/embed/late", json={"inputs": TEXTS[2], "model": NAME, "input_type": "query"}
    ).json()
    np.testing.assert_allclose(  # no markers nor query padding in BGE-M3
        queries["embeddings"][0]["embedding"], body["embeddings"][2]["embedding"], atol=1e-6
    )


def test_hybrid_gives_all_three_from_one_run(
    client: TestClient, oracle: dict[str, Any], m3: Built
) -> None:
    model = engine_registry(client.app).models[NAME]  # type: ignore[attr-defined]
    original = model.runners[0].run
    feeds_seen: list[int] = []

    def counted(feeds: Any) -> Any:
        feeds_seen.append(len(feeds["input_ids"]))
        return original(feeds)

    model.runners[0].run = counted
    try:
        body = client.post(
            "/embed/hybrid", json={"inputs": TEXTS, "models": [NAME], "return_tokens": True}
        ).json()
    finally:
        model.runners[0].run = original
    # Each text runs through the model once for its three outputs (the batcher may split
    # the texts into several batches); three passes would feed 3 x len(TEXTS) rows.
    assert sum(feeds_seen) == len(TEXTS)
    assert body["models"] == {"": NAME}
    assert body["usage"]["total_tokens"] == sum(len(v["late"]) + 1 for v in body["vectors"])
    for index, vectors in enumerate(body["vectors"]):
        assert set(vectors) == {"dense", "sparse", "late"}
        dense = np.asarray(vectors["dense"])
        assert cosines(dense, oracle["dense_vecs"][index]) >= 0.99999
        assert_lexical(vectors["sparse"], oracle["lexical_weights"][index])
        late = np.asarray(vectors["late"])
        assert cosines(late, oracle["colbert_vecs"][index]).min() >= 0.99999


def test_hybrid_names_prefix_the_three_vectors(client: TestClient) -> None:
    body = client.post(
        "/embed/hybrid", json={"inputs": ["blue sea"], "models": [{"model": NAME, "name": "m3"}]}
    ).json()
    assert set(body["vectors"][0]) == {"m3-dense", "m3-sparse", "m3-late"}
    twice = client.post("/embed/hybrid", json={"inputs": ["sea"], "models": [NAME, NAME]})
    assert "distinct" in error_of(twice, 400)["message"]
    empty = client.post("/embed/hybrid", json={"inputs": ["sea", ""], "models": [NAME]})
    assert error_of(empty, 400)["param"] == "input"


def test_maxsim_and_rerank_use_the_colbert_output(client: TestClient) -> None:
    late = client.post("/embed/late", json={"inputs": TEXTS[:2], "model": NAME}).json()
    query, document = (np.asarray(e["embedding"]) for e in late["embeddings"])
    expected = float((query @ document.T).max(axis=1).sum())
    scored = client.post(
        "/score/maxsim", json={"query": TEXTS[0], "documents": [TEXTS[1]], "model": NAME}
    ).json()
    assert scored["scores"][0] == pytest.approx(expected, rel=1e-5)
    ranked = client.post(
        "/rerank", json={"query": TEXTS[0], "documents": [TEXTS[1]], "model": NAME}
    ).json()
    assert ranked["results"][0]["relevance_score"] == pytest.approx(expected, rel=1e-5)


def test_base64_late_vectors_round_trip(client: TestClient) -> None:
    body = client.post(
        "/embed/late", json={"inputs": "blue sea", "model": NAME, "encoding_format": "base64"}
    ).json()
    item = body["embeddings"][0]
    raw = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    assert item["shape"] == [3, 32] and raw.shape == (3 * 32,)


def test_catalogue_row(tmp_path: Path) -> None:
    from service.models.catalogue import load_catalogue

    spec = load_catalogue()[NAME]
    assert (spec.kind, spec.dim, spec.max_length) == ("m3", 1024, 8192)
    assert spec.options["unused_token_ids"] == [0, 1, 2, 3]

"""/embed/late, /score/maxsim and /rerank with a late model, against a tiny ColBERT (BERT +
projection) exported with the project's converter and compared with PyTorch."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.models.kinds import late
from tests import late_models as lm
from tests.conftest import engine_registry, serving

MODEL = "tiny/colbert"
V = lm.bert_vocab()
CLS, SEP, MASK, Q, D = V["[CLS]"], V["[SEP]"], V["[MASK]"], 1, 2


@pytest.fixture(scope="module")
def colbert(tmp_path_factory: pytest.TempPathFactory) -> lm.Built:
    return lm.built("colbert", tmp_path_factory.getbasetemp() / "late-models")


@pytest.fixture(scope="module")
def client(colbert: lm.Built) -> Iterator[TestClient]:
    with serving(models=[str(colbert.directory)]) as test_client:
        yield test_client


def words(text: str) -> list[int]:
    for mark in ",.!":
        text = text.replace(mark, f" {mark} ")
    return [V[w] for w in text.lower().split()]


def assert_same_vectors(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    cosine = (got * expected).sum(axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def reference_query(colbert: lm.Built, text: str) -> np.ndarray:
    real = [CLS, Q, *words(text)[: lm.QUERY_LENGTH - 3], SEP]
    pad = lm.QUERY_LENGTH - len(real)
    mask = [1] * len(real) + [0] * pad
    return colbert.reference.vectors(real + [MASK] * pad, mask).numpy()


def reference_document(colbert: lm.Built, text: str) -> np.ndarray:
    ids = [CLS, D, *words(text)[: lm.MAX_LENGTH - 3], SEP]
    keep = [i for i, token in enumerate(ids) if token not in (V[","], V["."], V["!"])]
    return colbert.reference.vectors(ids, [1] * len(ids)).numpy()[keep]


def test_converter_records_colbert_rules(colbert: lm.Built) -> None:
    spec = colbert.metadata["spec"]
    assert (spec["kind"], spec["dim"]) == ("late", lm.COLBERT_DIM)
    assert spec["max_length"] == lm.MAX_LENGTH
    assert spec["options"] == {
        "query_length": lm.QUERY_LENGTH,
        "attend_to_mask_tokens": False,
        "query_marker_id": 1,
        "document_marker_id": 2,
        "mask_token": "[MASK]",
    }
    assert colbert.metadata["export"]["max_abs_error_vs_torch"] < 1e-5


def test_token_rules_are_exact(client: TestClient) -> None:
    model = engine_registry(client.app).models[MODEL]  # type: ignore[attr-defined]
    (_, short), (_, long) = late.prepare(
        model, ["Hello world", "one two three four five six"], "query", True
    )
    assert short.ids.tolist() == [CLS, Q, V["hello"], V["world"], SEP, MASK, MASK, MASK]
    assert short.mask.tolist() == [1, 1, 1, 1, 1, 0, 0, 0] and short.keep.all()
    assert long.ids.tolist() == [CLS, Q, *words("one two three four five"), SEP]  # cut to 8
    assert long.mask.all() and short.tokens == 5 and long.tokens == 8
    [(_, doc)] = late.prepare(model, ["The cat, sat on the mat."], "document", True)
    assert doc.ids.tolist() == [CLS, D, *words("the cat , sat on the mat ."), SEP]
    kept = doc.ids[doc.keep].tolist()
    assert kept == [CLS, D, *words("the cat sat on the mat"), SEP]


def test_queries_match_pytorch(client: TestClient, colbert: lm.Built) -> None:
    texts = ["what is the sun", "red star", "one two three four five six seven"]
    body = client.post("/embed/late", json={"inputs": texts, "input_type": "query"}).json()
    assert body["model"] == MODEL and body["dim"] == lm.COLBERT_DIM
    for item, text in zip(body["embeddings"], texts, strict=True):
        assert item["tokens"] == lm.QUERY_LENGTH and item["shape"] == [lm.QUERY_LENGTH, 16]
        assert_same_vectors(np.array(item["embedding"]), reference_query(colbert, text))
    assert body["usage"]["prompt_tokens"] == 7 + 5 + 8  # mask padding is not counted


def test_documents_match_pytorch_in_one_padded_batch(client: TestClient, colbert: lm.Built) -> None:
    texts = ["The cat, sat on the mat.", "sun", "blue sea, red sky. green moon! one two three"]
    body = client.post("/embed/late", json={"inputs": texts, "model": MODEL}).json()
    for item, text in zip(body["embeddings"], texts, strict=True):
        expected = reference_document(colbert, text)
        assert item["tokens"] == len(expected)
        assert_same_vectors(np.array(item["embedding"]), expected)
    assert [item["tokens"] for item in body["embeddings"]] == [9, 4, 12]


def test_token_strings_name_each_row(client: TestClient) -> None:
    for side, text, expected in [
        ("document", "The cat, sat on the mat.", ["[CLS]", "[unused1]", "the", "cat", "sat"]),
        ("query", "red star", ["[CLS]", "[unused0]", "red", "star", "[SEP]", "[MASK]"]),
    ]:
        body = {"inputs": [text], "input_type": side, "return_tokens": True}
        [item] = client.post("/embed/late", json=body).json()["embeddings"]
        assert item["token_strings"][: len(expected)] == expected
        assert len(item["token_strings"]) == item["tokens"] == len(item["embedding"])
    [item] = client.post("/embed/late", json={"inputs": ["sun"]}).json()["embeddings"]
    assert "token_strings" not in item


def test_base64_matrix_with_shape(client: TestClient, colbert: lm.Built) -> None:
    body = client.post(
        "/embed/late", json={"inputs": "red cat", "encoding_format": "base64"}
    ).json()
    item = body["embeddings"][0]
    matrix = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4").reshape(item["shape"])
    assert_same_vectors(matrix, reference_document(colbert, "red cat"))


def test_long_documents_truncate_or_413(colbert: lm.Built, client: TestClient) -> None:
    text = " ".join(lm.WORDS[:30])
    body = client.post("/embed/late", json={"inputs": [text]}).json()
    assert body["embeddings"][0]["tokens"] == lm.MAX_LENGTH
    assert_same_vectors(
        np.array(body["embeddings"][0]["embedding"]), reference_document(colbert, text)
    )
    refused = client.post("/embed/late", json={"inputs": [text], "truncate": False})
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "input_too_long"


def test_maxsim_from_texts_and_from_vectors(client: TestClient, colbert: lm.Built) -> None:
    query, docs = "red cat on the mat", ["the red cat sat on the mat", "blue sea", "red sky"]
    body = client.post("/score/maxsim", json={"query": query, "documents": docs}).json()
    q = reference_query(colbert, query)
    expected = [float((q @ reference_document(colbert, d).T).max(axis=1).sum()) for d in docs]
    np.testing.assert_allclose(body["scores"], expected, atol=1e-4)
    assert body["model"] == MODEL and body["usage"]["prompt_tokens"] == 8 + 10 + 5 + 5
    # the same from precomputed vectors (float and base64), with no model needed
    q_item = client.post("/embed/late", json={"inputs": query, "input_type": "query"}).json()
    d_items = client.post("/embed/late", json={"inputs": docs, "encoding_format": "base64"}).json()[
        "embeddings"
    ]
    again = client.post(
        "/score/maxsim", json={"query": q_item["embeddings"][0], "documents": d_items}
    ).json()
    assert again["model"] is None and again["usage"]["total_tokens"] == 0
    np.testing.assert_allclose(again["scores"], body["scores"], atol=1e-5)
    mixed = client.post(
        "/score/maxsim", json={"query": query, "documents": [docs[0], d_items[1], docs[2]]}
    ).json()
    np.testing.assert_allclose(mixed["scores"], body["scores"], atol=1e-5)


def test_rerank_with_a_late_model_ranks_by_maxsim(client: TestClient, colbert: lm.Built) -> None:
    query, docs = "blue sea", ["red cat", "the blue sea", "sea", "one two"]
    q = reference_query(colbert, query)
    expected = [float((q @ reference_document(colbert, d).T).max(axis=1).sum()) for d in docs]
    body = client.post(
        "/rerank", json={"query": query, "documents": docs, "top_n": 3, "model": MODEL}
    ).json()
    order = sorted(range(4), key=lambda i: -expected[i])[:3]
    assert [r["index"] for r in body["results"]] == order
    np.testing.assert_allclose(
        [r["relevance_score"] for r in body["results"]], [expected[i] for i in order], atol=1e-4
    )


@pytest.mark.parametrize(
    ("route", "payload", "status", "param"),
    [
        ("/embed/late", {"inputs": []}, 400, "input"),
        ("/embed/late", {"inputs": "x", "input_type": "passage"}, 400, "input_type"),
        ("/score/maxsim", {"query": "red", "documents": []}, 400, "documents"),
        (
            "/score/maxsim",
            {"query": {"embedding": [[1.0, 0.0]]}, "documents": [{"embedding": [[1.0, 0.0, 0.0]]}]},
            400,
            "documents",
        ),
        ("/score/maxsim", {"query": {"embedding": "AAAA"}, "documents": ["red"]}, 400, "query"),
        (
            "/score/maxsim",
            {"query": {"embedding": "AAAA", "shape": [2, 2]}, "documents": ["red"]},
            400,
            "query",
        ),
        (
            "/score/maxsim",
            {"query": {"embedding": [[1.0], []]}, "documents": ["red"]},
            400,
            "query",
        ),
        ("/score/maxsim", {"query": "red", "documents": ["sea"], "model": "nope"}, 404, "model"),
        (
            "/score/maxsim",
            {"query": "red", "documents": ["sea", {"embedding": "!!", "shape": [1, 1]}]},
            400,
            "documents",
        ),
    ],
)
def test_bad_input_gets_the_envelope(
    client: TestClient, route: str, payload: dict, status: int, param: str
) -> None:
    response = client.post(route, json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and "Traceback" not in error["message"]


def test_late_model_rows_load(tmp_path: Path) -> None:
    from service.models.catalogue import load_catalogue

    catalogue = load_catalogue()
    rows = {name: spec for name, spec in catalogue.items() if spec.kind == "late"}
    assert set(rows) >= {
        "colbert-ir/colbertv2.0",
        "answerdotai/answerai-colbert-small-v1",
        "jinaai/jina-colbert-v2",
    }
    jina = rows["jinaai/jina-colbert-v2"].options
    assert (jina["query_marker_id"], jina["document_marker_id"]) == (250002, 250003)
    assert jina["attend_to_mask_tokens"] is True and jina["mask_token"] == "<mask>"


def test_query_rules_of_a_model_that_attends_to_mask_tokens() -> None:
    """jina-colbert-v2's rules: XLM-R specials, markers 250002/250003, <mask> attended."""
    rules = late.LateRules(
        query_marker=250002,
        document_marker=250003,
        mask_id=250001,
        query_length=6,
        attend_to_mask=True,
        skip_ids=frozenset({5}),
    )
    item = late.build_query([10, 11], [0], [2], rules)
    assert item.ids.tolist() == [0, 250002, 10, 11, 2, 250001]
    assert item.mask.tolist() == [1] * 6 and item.tokens == 5
    doc = late.build_document([10, 5, 11], [0], [2], rules, pad_id=1)
    assert doc.ids.tolist() == [0, 250003, 10, 5, 11, 2]
    assert doc.keep.tolist() == [True, True, True, False, True, True]

"""TEI's routes (service/front/routes/tei.py) and Cohere's (routes/cohere.py) on tiny models
whose answers are exact: the shapes TEI's and Cohere's clients parse, TEI's error shape on
TEI's routes only, and /rerank telling TEI's body from Cohere's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests import late_models as lm
from tests import tiny_models
from tests.conftest import serving
from tests.envelope import error_of

SPLADE, BERT, COLBERT = "tiny/splade", "tiny/bert-reranker", "tiny/colbert"
QUERY = "what is the blue sea"
DOCS = ["the sea is blue", "a cat sat on the mat", "red sky"]


@pytest.fixture(scope="module")
def tiny_splade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tei-splade")
    tiny_models.write_tokenizer(directory)
    table = tiny_models.embedding_table(len(tiny_models.SPECIALS) + len(tiny_models.WORDS))
    tiny_models.write_dense_graph(directory / "model.onnx", table)
    spec = {"name": SPLADE, "kind": "sparse", "max_length": tiny_models.MAX_LENGTH}
    tiny_models.write_metadata(directory, spec)
    return directory


@pytest.fixture(scope="module")
def client(
    tiny_dense: tuple[Path, np.ndarray], tiny_splade: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    root = tmp_path_factory.getbasetemp() / "late-models"
    late = [lm.built("bert", root).directory, lm.built("colbert", root).directory]
    models = [str(tiny_dense[0]), str(tiny_splade), *(str(d) for d in late)]
    with serving(models=models) as test_client:
        yield test_client


def tei_error(response: object, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "error_type"}, body
    return dict(body)


def test_embed_is_a_bare_list_of_vectors(client: TestClient, tiny_dense) -> None:
    _, table = tiny_dense
    for path in ("/embed", "/"):
        one = client.post(path, json={"inputs": "hello world"}).json()
        np.testing.assert_allclose(
            one, [tiny_models.expected_dense(table, "hello world")], atol=1e-6
        )
    raw = client.post("/embed", json={"inputs": ["blue dog"], "normalize": False}).json()
    expected = tiny_models.expected_dense(table, "blue dog", normalize=False)
    np.testing.assert_allclose(raw[0], expected, atol=1e-6)
    query = client.post("/embed", json={"inputs": ["cat"], "prompt_name": "query"}).json()
    np.testing.assert_allclose(
        query[0], tiny_models.expected_dense(table, "cat", prefix="query: "), atol=1e-6
    )
    short = np.array(client.post("/embed", json={"inputs": ["cat"], "dimensions": 3}).json()[0])
    full = tiny_models.expected_dense(table, "cat")
    np.testing.assert_allclose(short, full[:3] / np.linalg.norm(full[:3]), atol=1e-6)


def test_tei_routes_fail_in_tei_shape_with_the_services_statuses(client: TestClient) -> None:
    cases = [
        ("/embed", {"inputs": []}, 400),
        ("/embed", {"inputs": 3}, 400),
        ("/embed", {"inputs": "x", "prompt_name": "nope"}, 400),
        ("/embed", {"inputs": "x", "truncation_direction": "left"}, 400),
        ("/embed", {"inputs": "x", "model": "no/such"}, 404),
        ("/embed", {"inputs": " ".join(["cat"] * 30), "truncate": False}, 413),
        ("/", {"inputs": []}, 400),
        ("/tokenize", {"inputs": []}, 400),
        ("/decode", {"ids": [10**6]}, 400),
        ("/embed_all", {"inputs": "x", "model": "tiny/dense"}, 400),
        ("/rerank", {"query": QUERY, "texts": []}, 400),
        ("/rerank", {"query": 3, "texts": ["a"]}, 400),
    ]
    for path, body, status in cases:
        error = tei_error(client.post(path, json=body), status)
        assert error["error_type"] == "Validation" and error["error"], (path, error)
    assert "prompt_name 'nope'" in tei_error(client.post("/embed", json=cases[2][1]), 400)["error"]
    # the service's other routes keep OpenAI's envelope
    error_of(client.post("/embed/dense", json={"inputs": []}), 400)
    error_of(client.post("/rerank", json={"query": QUERY}), 400)


def test_embed_sparse_lists_index_value_pairs(client: TestClient) -> None:
    texts = ["hello world", "fast cat"]
    native = client.post("/embed/sparse", json={"inputs": texts, "model": SPLADE}).json()
    got = client.post("/embed_sparse", json={"inputs": texts}).json()
    for pairs, vector in zip(got, native["embeddings"], strict=True):
        assert [p["index"] for p in pairs] == vector["indices"]
        np.testing.assert_allclose([p["value"] for p in pairs], vector["values"], rtol=1e-6)


def test_embed_all_returns_a_late_models_token_vectors(client: TestClient) -> None:
    texts = ["the sea is blue", "red sky"]
    native = client.post("/embed/late", json={"inputs": texts, "model": COLBERT}).json()
    got = client.post("/embed_all", json={"inputs": texts, "model": COLBERT}).json()
    for matrix, item in zip(got, native["embeddings"], strict=True):
        np.testing.assert_allclose(matrix, item["embedding"], atol=1e-6)


def test_rerank_takes_tei_and_cohere_bodies(client: TestClient) -> None:
    cohere = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "model": BERT}).json()
    tei = client.post(
        "/rerank", json={"query": QUERY, "texts": DOCS, "model": BERT, "return_text": True}
    ).json()
    assert [r["index"] for r in tei] == [r["index"] for r in cohere["results"]]
    np.testing.assert_allclose(
        [r["score"] for r in tei], [r["relevance_score"] for r in cohere["results"]]
    )
    assert [r["text"] for r in tei] == [DOCS[r["index"]] for r in tei]
    raw = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert "text" not in raw[0]
    np.testing.assert_allclose(
        1 / (1 + np.exp(-np.array([r["score"] for r in raw]))), [r["score"] for r in tei], atol=1e-6
    )


def test_tokenize_gives_byte_offsets_and_decode_inverts_it(client: TestClient) -> None:
    vocab = tiny_models.vocabulary()
    tokens = client.post("/tokenize", json={"inputs": "héllo cat"}).json()[0]
    assert tokens[0] == {
        "id": vocab["[CLS]"],
        "text": "[CLS]",
        "special": True,
        "start": None,
        "stop": None,
    }
    assert tokens[1] == {
        "id": vocab["[UNK]"],
        "text": "héllo",
        "special": False,
        "start": 0,
        "stop": 6,
    }
    assert tokens[2] == {
        "id": vocab["cat"],
        "text": "cat",
        "special": False,
        "start": 7,
        "stop": 10,
    }
    bare = client.post("/tokenize", json={"inputs": ["cat"], "add_special_tokens": False}).json()
    assert [t["id"] for t in bare[0]] == [vocab["cat"]]
    long = client.post("/tokenize", json={"inputs": " ".join(["cat"] * 30)}).json()[0]
    assert len(long) == 32  # never truncated
    ids = [vocab["hello"], vocab["world"]]
    assert client.post("/decode", json={"ids": ids}).json() == ["hello world"]
    assert client.post("/decode", json={"ids": [ids, ids[:1]]}).json() == ["hello world", "hello"]


def test_info_describes_the_first_model_or_the_asked_one(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["model_id"] == "tiny/dense" and info["model_type"] == {
        "embedding": {"pooling": "mean"}
    }
    assert info["max_input_length"] == tiny_models.MAX_LENGTH and info["model_dtype"] == "float32"
    assert info["max_client_batch_size"] == 2048 and info["auto_truncate"] is True
    reranker = client.get("/info", params={"model": BERT}).json()
    assert set(reranker["model_type"]) == {"reranker"}
    tei_error(client.get("/info", params={"model": "no/such"}), 404)


# --- Cohere --------------------------------------------------------------------------------
def test_cohere_embed_shapes(client: TestClient, tiny_dense) -> None:
    _, table = tiny_dense
    body = {
        "texts": ["cat", "blue dog"],
        "input_type": "search_query",
        "embedding_types": ["float", "ubinary", "base64"],
    }
    v2 = client.post("/v2/embed", json=body).json()
    assert v2["response_type"] == "embeddings_by_type" and v2["texts"] == body["texts"]
    assert set(v2["embeddings"]) == {"float", "ubinary", "base64"}
    expected = np.stack(
        [tiny_models.expected_dense(table, t, prefix="query: ") for t in body["texts"]]
    )
    np.testing.assert_allclose(v2["embeddings"]["float"], expected, atol=1e-6)
    assert v2["embeddings"]["ubinary"] == np.packbits(expected > 0, axis=-1).tolist()
    assert v2["meta"] == {
        "api_version": {"version": "2"},
        "billed_units": {"input_tokens": 3 + 4 + 2 * 1},
    }
    v1 = client.post("/v1/embed", json={"texts": ["cat"]}).json()
    assert v1["response_type"] == "embeddings_floats" and v1["meta"]["api_version"] == {
        "version": "1"
    }
    np.testing.assert_allclose(
        v1["embeddings"], [tiny_models.expected_dense(table, "cat")], atol=1e-6
    )


def test_cohere_rerank_v2_shape(client: TestClient) -> None:
    native = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2}).json()
    v2 = client.post(
        "/v2/rerank", json={"model": BERT, "query": QUERY, "documents": DOCS, "top_n": 2}
    ).json()
    assert set(v2) == {"id", "results", "meta"}
    assert [set(r) for r in v2["results"]] == [{"index", "relevance_score"}] * 2
    assert v2["results"] == native["results"]
    assert v2["meta"]["billed_units"] == {"search_units": 1}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"texts": []}, "texts"),
        ({}, "texts"),
        ({"texts": ["a"], "images": ["data:image/png;base64,AA=="]}, "images"),
        ({"texts": ["a"], "truncate": "START"}, "truncate"),
        ({"texts": ["a"], "embedding_types": ["int8"], "output_dimension": 4}, "embedding_type"),
        ({"texts": ["a"], "embedding_types": ["int4"]}, "embedding_types"),
    ],
)
def test_cohere_errors_in_the_envelope(client: TestClient, body: dict, param: str) -> None:
    assert error_of(client.post("/v2/embed", json=body), 400)["param"] == param


def test_nomic_rows_name_their_task_prompts() -> None:
    from service.models.catalogue import load_catalogue

    catalogue = load_catalogue()
    for name in ("nomic-ai/nomic-embed-text-v1.5", "nomic-ai/nomic-embed-text-v1"):
        prompts = catalogue[name].options["prompts"]
        assert prompts == {"classification": "classification: ", "clustering": "clustering: "}

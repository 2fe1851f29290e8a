"""API tests of /embed/sparse and /embed/hybrid on tiny models with exact expected values:
a tiny SPLADE (the tiny dense graph read as 8-word vocabulary logits), the tiny dense model
and BM25 (data/bm25)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.front.serving import hybrid as hybrid_serving
from service.front.serving.hybrid import HybridOptions, Member, embed_hybrid
from tests import tiny_models
from tests.conftest import serving
from tests.envelope import error_of
from tests.sparse_fixtures import BM25_DATA

SPLADE = "tiny/splade"
DENSE = "tiny/dense"


@pytest.fixture(scope="module")
def tiny_splade(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    directory = tmp_path_factory.mktemp("tiny-splade")
    tiny_models.write_tokenizer(directory)
    table = tiny_models.embedding_table(len(tiny_models.SPECIALS) + len(tiny_models.WORDS))
    tiny_models.write_dense_graph(directory / "model.onnx", table)
    spec = {"name": SPLADE, "kind": "sparse", "max_length": tiny_models.MAX_LENGTH}
    tiny_models.write_metadata(directory, spec)
    return directory, table


@pytest.fixture(scope="module")
def client(
    tiny_splade: tuple[Path, np.ndarray], tiny_dense: tuple[Path, np.ndarray]
) -> Iterator[TestClient]:
    models = [str(tiny_splade[0]), str(tiny_dense[0]), str(BM25_DATA)]
    with serving(models=models) as served:
        yield served


def expected_splade(table: np.ndarray, text: str) -> tuple[list[int], list[float]]:
    ids = tiny_models.token_ids(text)
    weights = np.max(np.log1p(np.maximum(table[ids], 0)), axis=0)
    indices = np.flatnonzero(weights)
    return indices.tolist(), weights[indices].tolist()


def test_splade_goes_through_the_batcher_with_exact_values(client: TestClient, tiny_splade) -> None:
    _, table = tiny_splade
    texts = ["hello world", "fast cat", "blue dog hello", " ".join(["cat"] * 30)]
    body = client.post("/embed/sparse", json={"model": SPLADE, "inputs": texts}).json()
    assert body["model"] == SPLADE
    for text, got in zip(texts, body["embeddings"], strict=True):
        indices, values = expected_splade(table, text)
        assert got["indices"] == indices and "tokens" not in got
        np.testing.assert_allclose(got["values"], values, rtol=1e-6)
    assert body["usage"]["prompt_tokens"] == 4 + 4 + 5 + tiny_models.MAX_LENGTH


def test_splade_tokens_name_the_vocabulary_ids(client: TestClient) -> None:
    body = client.post(
        "/embed/sparse", json={"inputs": "hello", "model": SPLADE, "return_tokens": True}
    ).json()
    names = {i: t for t, i in tiny_models.vocabulary().items()}
    vector = body["embeddings"][0]
    assert vector["tokens"] == [names[i] for i in vector["indices"]]


def test_empty_string_gets_an_empty_vector(client: TestClient) -> None:
    body = client.post("/embed/sparse", json={"inputs": ["", "cat", ""], "model": SPLADE}).json()
    assert [len(v["indices"]) for v in body["embeddings"]][::2] == [0, 0]
    assert body["embeddings"][1]["indices"]


def test_over_long_input_is_413_without_truncation(client: TestClient) -> None:
    response = client.post(
        "/embed/sparse", json={"inputs": "cat " * 40, "model": SPLADE, "truncate": False}
    )
    assert response.status_code == 413 and error_of(response)["code"] == "input_too_long"


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"inputs": [], "model": SPLADE}, 400, "inputs"),
        ({"inputs": "x", "model": "no/such"}, 404, "model"),
        ({"inputs": "x", "model": DENSE}, 400, "model"),
        ({"inputs": "x", "model": SPLADE, "language": "english"}, 400, "language"),
        ({"inputs": "x", "model": SPLADE, "input_type": "passage"}, 400, "input_type"),
        ({"inputs": 3}, 400, "inputs"),
        ({"inputs": "x" * 100_001}, 413, "inputs"),
    ],
)
def test_bad_requests_use_the_envelope(client: TestClient, payload, status, param) -> None:
    response = client.post("/embed/sparse", json=payload)
    assert response.status_code == status, response.text
    assert error_of(response)["param"] == param


def test_default_model_is_the_first_sparse_one(client: TestClient) -> None:
    assert client.post("/embed/sparse", json={"inputs": "cat"}).json()["model"] == SPLADE


def test_hybrid_returns_named_vectors_equal_to_single_model_calls(client: TestClient) -> None:
    texts = ["hello world", "the fast cat"]
    body = client.post(
        "/embed/hybrid",
        json={
            "inputs": texts,
            "models": [DENSE, SPLADE, {"model": "Qdrant/bm25", "name": "bm25"}],
            "input_type": "query",
        },
    )
    assert body.status_code == 200, body.text
    hybrid = body.json()
    # default names: the kind if no other member has it, else the short model name
    assert hybrid["models"] == {"dense": DENSE, "splade": SPLADE, "bm25": "Qdrant/bm25"}
    dense = client.post("/embed/dense", json={"inputs": texts, "input_type": "query"}).json()
    splade = client.post("/embed/sparse", json={"inputs": texts, "model": SPLADE}).json()
    bm25 = client.post(
        "/embed/sparse", json={"inputs": texts, "model": "Qdrant/bm25", "input_type": "query"}
    ).json()
    for i, row in enumerate(hybrid["vectors"]):
        assert set(row) == {"dense", "splade", "bm25"}
        np.testing.assert_allclose(row["dense"], dense["embeddings"][i], atol=1e-7)
        assert row["splade"] == splade["embeddings"][i] and row["bm25"] == bm25["embeddings"][i]
    usage = [dense["usage"], splade["usage"], bm25["usage"]]
    assert bm25["usage"]["prompt_tokens"] == 5  # words
    assert hybrid["usage"]["prompt_tokens"] == sum(u["prompt_tokens"] for u in usage)


@pytest.mark.parametrize(
    ("models", "status", "fragment"),
    [
        ([{"model": SPLADE, "name": "s"}, {"model": "Qdrant/bm25", "name": "s"}], 400, "distinct"),
        ([SPLADE, SPLADE], 400, "distinct"),
        ([SPLADE, "no/such"], 404, "not served"),
        ([], 400, "models"),
    ],
)
def test_hybrid_errors(client: TestClient, models, status, fragment) -> None:
    response = client.post("/embed/hybrid", json={"inputs": ["cat"], "models": models})
    assert response.status_code == status and fragment in error_of(response)["message"]


def test_hybrid_with_a_dense_member_refuses_empty_strings(client: TestClient) -> None:
    response = client.post("/embed/hybrid", json={"inputs": ["cat", ""], "models": [DENSE]})
    assert response.status_code == 400 and error_of(response)["param"] == "input"


def test_hybrid_members_run_concurrently(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fake member waits until every member has started: sequential runs would hang."""
    started = 0
    everyone = asyncio.Event()

    async def fake(model: Any, texts: Any, **_: Any) -> Any:
        nonlocal started
        started += 1
        if started == 3:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), timeout=2)
        raise LookupError("reached")

    monkeypatch.setattr(hybrid_serving, "embed_sparse", fake)

    model: Any = SimpleNamespace(spec=SimpleNamespace(kind="sparse", options={}))
    members = [Member(str(i), model) for i in range(3)]
    options = HybridOptions("document", True, None, False)
    with pytest.raises(LookupError, match="reached"):
        asyncio.run(embed_hybrid(members, ["x"], options))


def test_unknown_family_fails_loading_with_a_reason(tiny_splade, tmp_path: Path) -> None:
    from service.app import create_app
    from service.settings import Settings

    directory, _ = tiny_splade
    metadata = json.loads((directory / "service_model.json").read_text())
    metadata["spec"]["options"] = {"family": "bm52"}
    for name in ("model.onnx", "tokenizer.json"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    (tmp_path / "service_model.json").write_text(json.dumps(metadata))
    with TestClient(create_app(Settings(models=[str(tmp_path)]))) as client:
        for _ in range(500):
            body = client.get("/ready").json()
            if body.get("reason"):
                break
            time.sleep(0.02)
        assert "options.family must be one of" in body["reason"] and "bm52" in body["reason"]


def test_hybrid_compress_needs_a_multi_vector_member(client: TestClient) -> None:
    body = {"inputs": ["cat"], "models": [DENSE], "compress": {"binary": True}}
    assert error_of(client.post("/embed/hybrid", json=body), 400)["param"] == "compress"

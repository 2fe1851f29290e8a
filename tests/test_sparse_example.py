"""examples/hybrid_qdrant.py run against a live service (real MiniLM + BM25) and Qdrant's
in-process mode: fused search finds passages from a few of their own words, and the script
runs end to end."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
from qdrant_client import QdrantClient

from tests.conftest import ROOT
from tests.prod_server import live_server
from tests.sparse_fixtures import BM25_DATA, REAL_MINILM, built

pytestmark = pytest.mark.slow


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "hybrid_qdrant", ROOT / "examples" / "hybrid_qdrant.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_indexes_and_finds_passages(capsys: pytest.CaptureFixture[str]) -> None:
    hybrid = example()
    env = {"EMBED_MODELS": f"{built(REAL_MINILM)},{BM25_DATA}"}
    with live_server(env) as url:
        passages = hybrid.read("passages.jsonl", 80)
        client = QdrantClient(":memory:")
        hybrid.index(client, url, passages)
        assert client.count(hybrid.COLLECTION).count == 80
        picked = list(range(0, 80, 4))
        queries = [" ".join(passages[i].split()[2:10]) for i in picked]
        found = hybrid.search(client, url, queries)
        top1 = sum(ids[0] == i for i, ids in zip(picked, found, strict=True))
        assert top1 >= 18 and all(i in ids for i, ids in zip(picked, found, strict=True)), found
        hybrid.main(["--url", url, "--passages", "10", "--queries", "2"])
    printed = capsys.readouterr().out
    assert "The Process class" in printed and "  1. [" in printed
    assert sys.modules.get("hybrid_qdrant") is None

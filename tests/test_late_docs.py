"""The curl examples of docs/late-interaction-and-rerank.md run against tiny models of the
same kinds (catalogue names swapped for the tiny ones), so the documentation cannot rot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests import late_models as lm
from tests.conftest import serving

DOC = Path(__file__).resolve().parents[1] / "docs" / "late-interaction-and-rerank.md"
SWAP = {"colbert-ir/colbertv2.0": "tiny/colbert", "BAAI/bge-reranker-base": "tiny/bert-reranker"}


def curl_examples() -> list[tuple[str, dict]]:
    """(route, body) of every `curl -s localhost:8000/ROUTE ... -d '{...}'` in the page."""
    text = DOC.read_text()
    found = re.findall(r"curl -s localhost:8000(/\S+) .*?-d '(.*?)'", text, flags=re.S)
    return [(route, json.loads(body)) for route, body in found]


def test_every_curl_example_answers_200(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.getbasetemp() / "late-models"
    directories = [str(lm.built(name, root).directory) for name in ("colbert", "bert")]
    examples = curl_examples()
    assert {route for route, _ in examples} == {"/embed/late", "/score/maxsim", "/rerank"}
    with serving(models=directories) as client:
        for route, body in examples:
            body["model"] = SWAP[body["model"]]
            response = client.post(route, json=body)
            assert response.status_code == 200, (route, response.text)
            if route == "/rerank":
                [result] = response.json()["results"]  # top_n 1, with its document
                assert result["document"]["text"] in json.dumps(body["documents"])

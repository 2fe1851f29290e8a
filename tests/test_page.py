"""The try-it page at / in a real browser (headless Chromium over the DevTools protocol)
against the real service on loopback, serving tiny models of four kinds: the page picks a
model, takes texts as a user types them, and shows the numbers the API gives. Also what the
guard lets through when API keys are set, and the page switched off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests import late_models, m3_models
from tests.browser import Page, chromium
from tests.conftest import serving
from tests.prod_server import Server, running
from tests.sparse_fixtures import BM25_DATA

KEY = "page-test-key"


@pytest.fixture(scope="module")
def model_dirs(
    tiny_dense: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    root = tmp_path_factory.getbasetemp() / "late-models"
    late = [late_models.built(name, root).directory for name in ("colbert", "bert")]
    m3 = m3_models.built(tmp_path_factory.getbasetemp() / "m3-models").directory
    return [str(tiny_dense[0]), *map(str, late), str(BM25_DATA), str(m3)]


@pytest.fixture(scope="module")
def server(model_dirs: list[str]) -> Iterator[Server]:
    with running({"EMBED_MODELS": ",".join(model_dirs)}) as live:
        yield live


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with chromium() as browser_page:
        yield browser_page


def post(server: Server, path: str, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(server.url + path, json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def open_with(page: Page, server: Server, model: str) -> None:
    page.open(server.url + "/")
    page.wait_for("!document.getElementById('model').disabled")
    page.choose("#model", model)


def cell(page: Page, matrix: str, row: int, column: int) -> tuple[float, str]:
    found = page.evaluate(
        f'(() => {{ const c = document.querySelector(\'#{matrix} td[data-row="{row}"]'
        f'[data-col="{column}"]\'); return [c.dataset.value, c.textContent]; }})()'
    )
    return float(found[0]), str(found[1])


def test_the_page_shows_the_similarity_the_api_gives(
    server: Server, page: Page, tmp_path: Path
) -> None:
    open_with(page, server, "tiny/dense")
    options = page.evaluate("[...document.querySelectorAll('#model option')].map(o => o.text)")
    assert "tiny/dense (dense)" in options and "tiny/colbert (late)" in options
    texts = ["the cat sat on the mat", "the dog sat on the red mat"]
    page.type_into("#texts", "\n".join(texts))
    page.click("#compare")
    page.wait_for("document.querySelector('#dense-matrix td')")
    shown, label = cell(page, "dense-matrix", 0, 1)
    vectors = np.asarray(post(server, "/embed/dense", {"inputs": texts})["embeddings"])
    expected = float(vectors[0] @ vectors[1] / np.linalg.norm(vectors, axis=1).prod())
    assert abs(shown - expected) < 1e-9 and label == f"{expected:.3f}"
    assert cell(page, "dense-matrix", 1, 1)[1] == "1.000"
    page.screenshot(tmp_path / "page.png")
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sparse_tokens_and_weights_as_bars(server: Server, page: Page) -> None:
    open_with(page, server, "Qdrant/bm25")
    texts = ["fast cats and fast dogs", "dogs sleep"]
    page.type_into("#texts", "\n".join(texts))
    page.click("#compare")
    page.wait_for("document.querySelector('#sparse-tokens .bar-row')")
    bars = page.evaluate(
        "[...document.querySelectorAll('#sparse-tokens .token-list')].map(list =>"
        " [...list.querySelectorAll('.bar-row')].map(r => [r.dataset.token, +r.dataset.value]))"
    )
    body = {"inputs": texts, "model": "Qdrant/bm25", "return_tokens": True}
    vectors = post(server, "/embed/sparse", body)["embeddings"]
    for shown, vector in zip(bars, vectors, strict=True):
        weights = dict(zip(vector["tokens"], vector["values"], strict=True))
        assert dict(shown) == weights
        assert [w for _, w in shown] == sorted(weights.values(), reverse=True)
    shared = sum(
        weights_a * dict(zip(vectors[1]["indices"], vectors[1]["values"], strict=True)).get(i, 0)
        for i, weights_a in zip(vectors[0]["indices"], vectors[0]["values"], strict=True)
    )
    assert abs(cell(page, "sparse-matrix", 0, 1)[0] - shared) < 1e-9 and shared > 0


def test_a_reranker_ranks_the_documents_with_their_scores(server: Server, page: Page) -> None:
    open_with(page, server, "tiny/bert-reranker")
    documents = ["the cat sat on the mat", "blue sea", "one two three"]
    page.type_into("#query", "where is the cat")
    page.type_into("#documents", "\n".join(documents))
    page.click("#rank")
    page.wait_for("document.querySelector('#ranking li')")
    shown = page.evaluate(
        "[...document.querySelectorAll('#ranking li')].map(li => [+li.dataset.index,"
        " +li.dataset.score, li.querySelector('.text').textContent])"
    )
    body = {"query": "where is the cat", "documents": documents, "model": "tiny/bert-reranker"}
    results = post(server, "/rerank", body)["results"]
    assert [(i, s) for i, s, _ in shown] == [(r["index"], r["relevance_score"]) for r in results]
    assert [text for _, _, text in shown] == [documents[r["index"]] for r in results]


def test_colbert_maxsim_heat_map_of_query_and_document_tokens(server: Server, page: Page) -> None:
    open_with(page, server, "tiny/colbert")
    documents = ["the cat sat on the mat", "blue sea, red sky"]
    page.type_into("#query", "red sky")
    page.type_into("#documents", "\n".join(documents))
    page.click("#rank")
    page.wait_for("document.querySelectorAll('.late-block').length === 2")
    blocks = page.evaluate(
        "[...document.querySelectorAll('.late-block')].map(b => [+b.dataset.index,"
        " +b.dataset.score, [...b.querySelectorAll('th.row')].map(t => t.textContent),"
        " [...b.querySelectorAll('th.column')].map(t => t.textContent),"
        " b.querySelectorAll('td.best').length])"
    )
    body = {"query": "red sky", "documents": documents, "model": "tiny/colbert"}
    scores = post(server, "/score/maxsim", body)["scores"]
    assert [index for index, *_ in blocks] == sorted(range(2), key=lambda i: -scores[i])
    for index, score, rows, columns, best in blocks:
        assert abs(score - scores[index]) < 1e-5
        assert rows[:5] == ["[CLS]", "[unused0]", "red", "sky", "[SEP]"]
        assert len(rows) == late_models.QUERY_LENGTH and best == len(rows)
        assert columns[:2] == ["[CLS]", "[unused1]"] and "," not in columns


def test_bge_m3_shows_its_three_outputs_from_one_call(server: Server, page: Page) -> None:
    open_with(page, server, m3_models.NAME)
    texts = ["the cat sat on the mat", "the dog sat on the red mat", "blue sea"]
    page.type_into("#texts", "\n".join(texts))
    page.click("#compare")
    page.wait_for("document.querySelector('#m3-late-matrix td')")
    assert page.evaluate("document.getElementById('dense-result').hidden") is False
    body = {"inputs": texts, "model": m3_models.NAME}
    dense = np.asarray(post(server, "/embed/dense", body)["embeddings"])
    sparse = post(server, "/embed/sparse", body | {"return_tokens": True})["embeddings"]
    late = [np.asarray(e["embedding"]) for e in post(server, "/embed/late", body)["embeddings"]]
    for row, column in ((0, 1), (1, 2), (2, 0)):
        cosine = dense[row] @ dense[column] / np.linalg.norm(dense[[row, column]], axis=1).prod()
        assert abs(cell(page, "dense-matrix", row, column)[0] - cosine) < 1e-6
        weights = dict(zip(sparse[column]["indices"], sparse[column]["values"], strict=True))
        shared = sum(
            value * weights.get(index, 0.0)
            for index, value in zip(sparse[row]["indices"], sparse[row]["values"], strict=True)
        )
        assert abs(cell(page, "sparse-matrix", row, column)[0] - shared) < 1e-6
        maxsim = float((late[row] @ late[column].T).max(axis=1).sum())
        assert abs(cell(page, "m3-late-matrix", row, column)[0] - maxsim) < 1e-5
    bars = page.evaluate(
        "[...document.querySelectorAll('#sparse-tokens .token-list')].map(list =>"
        " [...list.querySelectorAll('.bar-row')].map(r => r.dataset.token))"
    )
    assert [sorted(shown) for shown in bars] == [sorted(v["tokens"]) for v in sparse]


def test_with_api_keys_the_page_asks_for_one_and_sends_it(model_dirs: list[str]) -> None:
    env = {"EMBED_MODELS": model_dirs[0], "EMBED_API_KEYS": KEY}
    with running(env) as live, chromium() as page:
        for path in ("/", "/ui/app.js", "/ui/style.css"):  # the page needs no key
            response = httpx.get(live.url + path)
            assert response.status_code == 200
            assert "script-src 'self'" in response.headers["content-security-policy"]
        assert httpx.get(live.url + "/models").status_code == 401
        assert httpx.get(live.url + "/ui/%2e%2e/models").status_code == 404
        page.open(live.url + "/")
        page.wait_for("document.getElementById('status').textContent.includes('API key')")
        page.type_into("#key", KEY)
        page.click("#use-key")
        page.wait_for("!document.getElementById('model').disabled")
        page.type_into("#texts", "hello world\nred cat")
        page.click("#compare")
        page.wait_for("document.querySelector('#dense-matrix td')")
        vectors = np.asarray(
            post(live, "/embed/dense", {"inputs": ["hello world", "red cat"]}, KEY)["embeddings"]
        )
        assert abs(cell(page, "dense-matrix", 0, 1)[0] - float(vectors[0] @ vectors[1])) < 1e-6
        stored = page.evaluate("sessionStorage.getItem('embedding-service-api-key')")
        assert stored == KEY


def test_the_page_is_off_with_the_setting(tiny_dense: tuple[Path, np.ndarray]) -> None:
    with serving(models=[str(tiny_dense[0])], ui=False) as client:
        # GET / is not served; POST / is TEI's embed (routes/tei.py), hence 405 there
        for path, status in (("/", 405), ("/ui/app.js", 404)):
            response = client.get(path)
            assert response.status_code == status
            assert json.loads(response.text)["error"]["code"] is not None
        assert "/" not in client.get("/openapi.json").json()["paths"]


def test_with_the_page_off_its_paths_need_the_key_like_any_other(
    tiny_dense: tuple[Path, np.ndarray],
) -> None:
    with serving(models=[str(tiny_dense[0])], ui=False, api_keys=KEY) as client:
        assert client.get("/").status_code == 401
        assert client.get("/ui/app.js").status_code == 401
        assert client.get("/", headers={"authorization": f"Bearer {KEY}"}).status_code == 405

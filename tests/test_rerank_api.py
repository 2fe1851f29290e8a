"""/rerank and /v1/rerank against tiny BERT and XLM-RoBERTa cross-encoders exported with the
project's converter; scores compared with the PyTorch models' logits."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests import late_models as lm
from tests.conftest import engine_registry, serving

BERT, XLMR = "tiny/bert-reranker", "tiny/xlmr-reranker"
BV, XV = lm.bert_vocab(), lm.xlmr_vocab()
QUERY = "what is the blue sea"
DOCS = ["the sea is blue", "a cat sat on the mat", "red sky", "blue sky , blue sea", "sun"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, lm.Built]:
    root = tmp_path_factory.getbasetemp() / "late-models"
    return {BERT: lm.built("bert", root), XLMR: lm.built("xlmr", root)}


@pytest.fixture(scope="module")
def client(models: dict[str, lm.Built]) -> Iterator[TestClient]:
    with serving(models=[str(m.directory) for m in models.values()]) as test_client:
        yield test_client


def bert_pair(query: list[str], doc: list[str]) -> tuple[list[int], list[int]]:
    ids = [BV["[CLS]"], *(BV[w] for w in query), BV["[SEP]"], *(BV[w] for w in doc), BV["[SEP]"]]
    return ids, [0] * (len(query) + 2) + [1] * (len(doc) + 1)


def xlmr_pair(query: list[str], doc: list[str]) -> list[int]:
    s, e = XV["<s>"], XV["</s>"]
    return [s, *(XV[w] for w in query), e, e, *(XV[w] for w in doc), e]


def expected_logits(
    models: dict[str, lm.Built], name: str, query: str, docs: list[str]
) -> list[float]:
    """PyTorch logits for the pairs, built token by token (the document side cut to fit)."""
    logits = []
    for doc in docs:
        specials = 3 if name == BERT else 4
        q = query.split()[: (lm.MAX_LENGTH - specials) // 2]
        room = lm.MAX_LENGTH - len(q) - specials
        d = doc.split()[:room]
        if name == BERT:
            ids, types = bert_pair(q, d)
            logits.append(lm.cross_encoder_logit(models[name].reference, ids, types))
        else:
            ids = xlmr_pair(q, d)
            logits.append(lm.cross_encoder_logit(models[name].reference, ids, [0] * len(ids)))
    return logits


def sigmoid(values: list[float]) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(values)))


@pytest.mark.parametrize("name", [BERT, XLMR])
def test_scores_are_the_sigmoid_of_pytorch_logits_best_first(
    client: TestClient, models: dict[str, lm.Built], name: str
) -> None:
    body = client.post("/rerank", json={"model": name, "query": QUERY, "documents": DOCS}).json()
    expected = sigmoid(expected_logits(models, name, QUERY, DOCS))
    order = list(np.argsort(-expected, kind="stable"))
    assert body["model"] == name
    assert [r["index"] for r in body["results"]] == order
    np.testing.assert_allclose(
        [r["relevance_score"] for r in body["results"]], expected[order], atol=1e-4
    )
    assert all("document" not in r for r in body["results"])
    assert body["usage"]["prompt_tokens"] == sum(
        len(QUERY.split()) + len(d.split()) + 3 + (name == XLMR) for d in DOCS
    )


@pytest.mark.parametrize("name", [BERT, XLMR])
def test_raw_scores_are_the_logits(
    client: TestClient, models: dict[str, lm.Built], name: str
) -> None:
    body = client.post(
        "/v1/rerank", json={"model": name, "query": QUERY, "documents": DOCS, "raw_scores": True}
    ).json()
    expected = expected_logits(models, name, QUERY, DOCS)
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(DOCS))], expected, atol=1e-4)


def test_top_n_objects_and_return_documents(client: TestClient) -> None:
    documents = [{"text": d} for d in DOCS]
    full = client.post("/rerank", json={"model": BERT, "query": QUERY, "documents": documents})
    top = client.post(
        "/rerank",
        json={
            "model": BERT,
            "query": QUERY,
            "documents": documents,
            "top_n": 2,
            "return_documents": True,
        },
    ).json()
    assert [r["index"] for r in top["results"]] == [r["index"] for r in full.json()["results"][:2]]
    assert [r["document"] for r in top["results"]] == [
        documents[r["index"]] for r in top["results"]
    ]
    many = client.post(
        "/rerank", json={"model": BERT, "query": QUERY, "documents": DOCS, "top_n": 50}
    ).json()
    assert sorted(r["index"] for r in many["results"]) == list(range(len(DOCS)))


def test_long_documents_are_cut_on_the_document_side(
    client: TestClient, models: dict[str, lm.Built]
) -> None:
    long_doc = " ".join(lm.WORDS * 2)
    long_query = " ".join(lm.WORDS[:20])  # cut to (24 - special tokens) // 2 = 10 words
    for name in (BERT, XLMR):
        for query in (QUERY, long_query):
            body = client.post(
                "/rerank",
                json={
                    "model": name,
                    "query": query,
                    "documents": [long_doc, "sea"],
                    "raw_scores": True,
                },
            ).json()
            got = {r["index"]: r["relevance_score"] for r in body["results"]}
            expected = expected_logits(models, name, query, [long_doc, "sea"])
            np.testing.assert_allclose([got[0], got[1]], expected, atol=1e-4)
    refused = client.post(
        "/rerank",
        json={"model": BERT, "query": QUERY, "documents": ["sea", long_doc], "truncate": False},
    )
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["param"] == "documents" and "document 1" in error["message"]
    refused = client.post(
        "/rerank",
        json={"model": BERT, "query": long_query, "documents": ["sea"], "truncate": False},
    )
    assert refused.status_code == 413 and refused.json()["error"]["param"] == "query"


def test_each_pair_is_one_batch_item(client: TestClient) -> None:
    model = engine_registry(client.app).models[BERT]  # type: ignore[attr-defined]
    documents = [f"{a} {b}" for a in lm.WORDS[:6] for b in lm.WORDS[6:11]]  # 30 pairs
    before = model.batcher.batches_run
    body = client.post("/rerank", json={"model": BERT, "query": QUERY, "documents": documents})
    assert len(body.json()["results"]) == 30
    assert model.batcher.batches_run - before == 1  # 30 pairs <= 32 items: one batch


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"query": QUERY, "documents": []}, 400, "documents"),
        ({"query": "", "documents": ["sea"]}, 400, "query"),
        ({"query": QUERY, "documents": ["sea"], "top_n": 0}, 400, "top_n"),
        ({"query": QUERY, "documents": [{"title": "x"}]}, 400, "documents"),
        ({"query": QUERY}, 400, "documents"),
        ({"query": QUERY, "documents": ["sea"], "model": "nope"}, 404, "model"),
    ],
)
def test_bad_input_gets_the_envelope(
    client: TestClient, payload: dict, status: int, param: str
) -> None:
    response = client.post("/rerank", json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and "Traceback" not in error["message"]


def test_reranker_rows_load() -> None:
    from service.models.catalogue import load_catalogue

    names = {n for n, spec in load_catalogue().items() if spec.kind == "rerank"}
    assert names >= {
        "Xenova/ms-marco-MiniLM-L-6-v2",
        "Xenova/ms-marco-MiniLM-L-12-v2",
        "BAAI/bge-reranker-base",
        "jinaai/jina-reranker-v1-tiny-en",
        "jinaai/jina-reranker-v1-turbo-en",
        "jinaai/jina-reranker-v2-base-multilingual",
    }


def test_sigmoid_is_exact_and_does_not_overflow() -> None:
    from service.models.kinds.rerank import sigmoid

    logits = np.array([-3.0, 0.0, 2.5])
    np.testing.assert_allclose(sigmoid(logits), 1 / (1 + np.exp(-logits)), atol=1e-12)
    assert sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]  # no overflow warning

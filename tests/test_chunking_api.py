"""/embed/dense with `chunking` on the tiny dense model (16 tokens), whose vectors are exact:
each chunk's vector is what its text gets alone from the plain route, chunks cover the input,
pooling, limits, and chunks sharing batches with other requests."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests import tiny_models
from tests.conftest import engine_registry, serving
from tests.envelope import error_of

SENTENCE_WORDS = tiny_models.WORDS[4:26]  # "the" ... "ten", no prefixes or punctuation


def long_text(seed: int, words: int = 70) -> str:
    rng = random.Random(seed)
    parts = []
    for _ in range(words):
        parts.append(rng.choice(SENTENCE_WORDS))
        parts.append(rng.choice([" ", " ", " ", " . ", " , ", "  ", " .\n\n"]))
    return "".join(parts).strip()


def chunks_of(body: dict[str, Any], index: int = 0) -> list[dict[str, Any]]:
    return list(body["documents"][index]["chunks"])


def plain(client: TestClient, texts: list[str], **options: Any) -> np.ndarray:
    response = client.post("/embed/dense", json={"inputs": texts, **options})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embeddings"], dtype=np.float32)


def assert_covers(text: str, chunks: list[dict[str, Any]]) -> None:
    """Chunks in order, each starting before the last one ends or after only whitespace."""
    assert text[: chunks[0]["start"]].strip() == "" and text[chunks[-1]["end"] :].strip() == ""
    for before, after in itertools.pairwise(chunks):
        assert before["start"] < after["start"]
        assert text[before["end"] : after["start"]].strip() == "" or after["start"] < before["end"]


@pytest.mark.parametrize("input_type", [None, "query"])
def test_each_chunk_gets_what_its_text_gets_on_its_own(
    tiny_client: TestClient, tiny_dense: tuple[Path, np.ndarray], input_type: str | None
) -> None:
    _, table = tiny_dense
    texts = [long_text(1), long_text(2, 30), "hello world"]
    chunking = {"max_tokens": 10, "overlap_tokens": 3}
    response = tiny_client.post(
        "/embed/dense", json={"inputs": texts, "chunking": chunking, "input_type": input_type}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny/dense" and body["dim"] == tiny_models.DIM
    assert [d["index"] for d in body["documents"]] == [0, 1, 2]
    prefix = "query: " if input_type else ""
    used = 0
    for text, document in zip(texts, body["documents"], strict=True):
        chunks = document["chunks"]
        assert "embedding" not in document  # no pool asked
        assert_covers(text, chunks)
        pieces = [text[c["start"] : c["end"]] for c in chunks]
        alone = plain(tiny_client, pieces, input_type=input_type)
        got = np.asarray([c["embedding"] for c in chunks], dtype=np.float32)
        np.testing.assert_array_equal(got, alone)
        for chunk, piece, vector in zip(chunks, pieces, got, strict=True):
            ids = tiny_models.token_ids(prefix + piece)
            assert chunk["tokens"] == len(ids) <= 10
            np.testing.assert_allclose(
                vector, tiny_models.expected_dense(table, piece, prefix=prefix), atol=1e-6
            )
        used += sum(c["tokens"] for c in chunks)
    assert len(chunks_of(body, 0)) >= 8 and len(chunks_of(body, 2)) == 1
    assert body["usage"] == {"prompt_tokens": used, "total_tokens": used}


def test_chunks_end_at_sentences_in_reach(tiny_client: TestClient) -> None:
    text = "the cat sat on the mat . the dog sat on the red mat .\n\none two three"
    body = tiny_client.post(
        "/embed/dense", json={"inputs": text, "chunking": {"max_tokens": 12}}
    ).json()
    assert [text[c["start"] : c["end"]] for c in chunks_of(body)] == [
        "the cat sat on the mat .",
        "the dog sat on the red mat .",
        "one two three",
    ]
    # the default is the model's own limit: 14 words of text and its two special tokens
    body = tiny_client.post("/embed/dense", json={"inputs": text, "chunking": {}}).json()
    assert [c["tokens"] for c in chunks_of(body)] == [9, 13]  # the rest fits in one


def test_pooled_vectors_beside_the_chunks(tiny_client: TestClient) -> None:
    text = long_text(3)
    for pool in ("mean", "max"):
        body = tiny_client.post(
            "/embed/dense",
            json={"inputs": [text], "chunking": {"max_tokens": 9, "pool": pool}},
        ).json()
        chunks = chunks_of(body)
        vectors = np.asarray([c["embedding"] for c in chunks], dtype=np.float64)
        tokens = np.asarray([c["tokens"] for c in chunks], dtype=np.float64)
        if pool == "mean":
            expected = (vectors * tokens[:, None]).sum(axis=0) / tokens.sum()
        else:
            expected = vectors.max(axis=0)
        expected /= np.linalg.norm(expected)
        pooled = np.asarray(body["documents"][0]["embedding"])
        np.testing.assert_allclose(pooled, expected, atol=1e-6)


def test_raw_vectors_dimensions_and_base64(tiny_client: TestClient) -> None:
    import base64

    text = long_text(4, 30)
    common = {"inputs": [text], "chunking": {"max_tokens": 8, "pool": "mean"}}
    raw = tiny_client.post("/embed/dense", json={**common, "normalize": False}).json()
    pieces = [text[c["start"] : c["end"]] for c in chunks_of(raw)]
    np.testing.assert_array_equal(
        np.asarray([c["embedding"] for c in chunks_of(raw)], dtype=np.float32),
        plain(tiny_client, pieces, normalize=False),
    )
    vectors = np.asarray([c["embedding"] for c in chunks_of(raw)], dtype=np.float64)
    weights = np.asarray([c["tokens"] for c in chunks_of(raw)], dtype=np.float64)
    np.testing.assert_allclose(
        raw["documents"][0]["embedding"], weights @ vectors / weights.sum(), atol=1e-6
    )
    short = tiny_client.post(
        "/embed/dense", json={**common, "dimensions": 3, "encoding_format": "base64"}
    ).json()
    assert short["dim"] == 3
    decoded = [np.frombuffer(base64.b64decode(c["embedding"]), "<f4") for c in chunks_of(short)]
    np.testing.assert_array_equal(np.stack(decoded), plain(tiny_client, pieces, dimensions=3))
    pooled = np.frombuffer(base64.b64decode(short["documents"][0]["embedding"]), "<f4")
    assert pooled.shape == (3,) and abs(float(np.linalg.norm(pooled)) - 1) < 1e-6


@pytest.mark.parametrize(
    ("chunking", "message"),
    [
        ({"max_tokens": 17}, "chunking.max_tokens is 17; model 'tiny/dense' holds 16 tokens"),
        ({"max_tokens": 8, "overlap_tokens": 8}, "overlap_tokens must be less than max_tokens"),
        ({"max_tokens": 2}, "chunking.max_tokens of 2 leaves no room for text"),
        ({"max_tokens": 4, "overlap_tokens": 2}, "less than the 2 tokens of text a chunk holds"),
        ({"late": True, "max_tokens": 8}, "does not do late chunking"),
        ({"max_tokens": 0}, "greater than or equal to 1"),
        ({"size": 8}, "Extra inputs are not permitted"),
    ],
)
def test_chunking_options_are_checked(
    tiny_client: TestClient, chunking: dict[str, Any], message: str
) -> None:
    response = tiny_client.post("/embed/dense", json={"inputs": ["one two"], "chunking": chunking})
    error = error_of(response, 400)
    assert message in error["message"], error


def test_the_prefix_counts_against_max_tokens(tiny_client: TestClient) -> None:
    response = tiny_client.post(
        "/embed/dense",
        json={"inputs": ["one two"], "input_type": "query", "chunking": {"max_tokens": 3}},
    )
    assert "max_tokens of 3 leaves no room for text" in error_of(response, 400)["message"]


def test_tokens_and_chunks_over_the_limits_get_413(tiny_dense: tuple[Path, np.ndarray]) -> None:
    text = " ".join(["one"] * 40)
    with serving(
        models=[str(tiny_dense[0])], max_chunked_tokens=60, max_inputs_per_request=8
    ) as client:

        def ask(texts: list[str], max_tokens: int) -> Any:
            return client.post(
                "/embed/dense", json={"inputs": texts, "chunking": {"max_tokens": max_tokens}}
            )

        # 40 words in 4 chunks of 12 tokens at most: 48 tokens, within both limits
        assert ask([text], 12).status_code == 200
        error = error_of(ask([text, text], 16), 413)
        assert (
            error["message"] == "the inputs hold 80 tokens; a chunked request may send at most 60"
        )
        assert error["code"] == "input_too_long" and error["param"] == "chunking"
        words = " ".join(["one"] * 12)
        error = error_of(ask([words], 3), 413)  # 12 chunks of one word: 36 tokens
        assert error["message"] == "the request makes at least 12 chunks; the limit is 8"
        words = " ".join(["one"] * 30)
        error = error_of(ask([words], 3), 413)  # 30 chunks of 1 word and 2 special tokens
        assert error["message"] == (
            "the request's chunks hold at least 90 tokens (special tokens and overlaps "
            "included); the limit is 60"
        )


class GatedRunner:
    """Wraps a real session: records the rows of each batch; every call waits for the gate."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.provider = inner, inner.provider
        self.batches: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.lock = threading.Lock()

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        rows = [
            list(ids[mask == 1])
            for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"], strict=True)
        ]
        with self.lock:
            self.batches.append(rows)
        assert self.gate.wait(timeout=60)
        return self.inner.run(feeds)


def until(condition: Any, what: str) -> None:
    """Wait for a state of the batcher that another thread brings about (bounded)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.005)


OTHER = "red blue green red blue green red blue green red"


def test_a_requests_chunks_share_batches_with_other_requests(
    tiny_dense: tuple[Path, np.ndarray],
) -> None:
    vocab = tiny_models.vocabulary()
    document = " ".join(["one two three four five six seven eight nine ten"] * 3)
    with serving(models=[str(tiny_dense[0])], max_wait_ms=20) as client:
        model = engine_registry(client.app).models["tiny/dense"]
        runner = GatedRunner(model.runners[0])
        model.runners[0] = runner
        batcher = model.batcher

        def dispatched() -> int:  # batches handed to the worker, running or waiting
            return sum(len(batches) for batches in batcher._dispatched)

        def call(body: dict[str, Any]) -> dict[str, Any]:
            response = client.post("/embed/dense", json=body)
            assert response.status_code == 200, response.text
            return dict(response.json())

        with ThreadPoolExecutor(4) as pool:
            # fill the worker's pipeline: one batch running (held at the gate), one formed
            # and waiting behind it; then nothing more can be formed until the gate opens
            futures = [pool.submit(call, {"inputs": ["hello"]})]
            until(lambda: len(runner.batches) == 1, "the first batch runs")
            futures.append(pool.submit(call, {"inputs": ["world"]}))
            until(lambda: dispatched() == 2, "the second batch waits")
            chunking = {"max_tokens": 12}
            futures.append(pool.submit(call, {"inputs": [document], "chunking": chunking}))
            futures.append(pool.submit(call, {"inputs": [OTHER]}))
            until(lambda: batcher.depth == 4, "3 chunks and the other input are queued")
            runner.gate.set()
            answers = [future.result() for future in futures]
    assert len(runner.batches) == 3, runner.batches
    shared = runner.batches[2]  # the chunks and the other request's input: lengths 12 and 12
    assert sum(vocab["red"] in row for row in shared) == 1
    assert sum(vocab["one"] in row for row in shared) == 3
    assert len(answers[2]["documents"][0]["chunks"]) == 3
    np.testing.assert_allclose(
        answers[3]["embeddings"][0],
        tiny_models.expected_dense(tiny_dense[1], OTHER),
        atol=1e-6,
    )


# --- late chunking on the tiny model: no context, so a chunk's vector is exact ---------------
@pytest.fixture(scope="module")
def late_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    directory = tmp_path_factory.mktemp("tiny-late")
    table = tiny_models.build_dense_model(directory, name="tiny/late")
    metadata_file = directory / "service_model.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["spec"]["options"] = {"late_chunking": True}
    metadata_file.write_text(json.dumps(metadata))
    with serving(models=[str(directory)]) as client:
        yield client, table


def test_late_chunks_pool_the_token_states_of_their_span(late_client: Any) -> None:
    client, table = late_client
    text = long_text(5, 40)
    response = client.post(
        "/embed/dense",
        json={
            "inputs": [text, "hello"],
            "input_type": "query",
            "chunking": {"max_tokens": 5, "overlap_tokens": 1, "late": True, "pool": "mean"},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    for source, document in zip([text, "hello"], body["documents"], strict=True):
        chunks = document["chunks"]
        assert_covers(source, chunks)
        for chunk in chunks:
            words = source[chunk["start"] : chunk["end"]].lower().split()
            assert chunk["tokens"] == len(words) <= 5
            rows = table[[tiny_models.vocabulary()[w] for w in words]]
            expected = rows.mean(axis=0) / np.linalg.norm(rows.mean(axis=0))
            np.testing.assert_allclose(chunk["embedding"], expected, atol=1e-6)
    # windows of 16 tokens: [CLS], "query:", at most 13 words, [SEP]; chunks never straddle two
    words = len(text.split())
    chunk_count = len(chunks_of(body))
    assert body["usage"]["prompt_tokens"] > words + 3 + 3  # several windows, "hello"'s too
    assert chunk_count >= words // 5


def test_late_chunking_needs_max_tokens_within_a_window(late_client: Any) -> None:
    client, _ = late_client
    for chunking, message in [
        ({"late": True}, "late chunking needs chunking.max_tokens"),
        ({"late": True, "max_tokens": 15}, "a window of model 'tiny/late' holds 14 tokens"),
    ]:
        response = client.post("/embed/dense", json={"inputs": ["one"], "chunking": chunking})
        assert message in error_of(response, 400)["message"]


def test_a_text_without_tokens_is_one_chunk_of_the_whole_text(late_client: Any) -> None:
    client, table = late_client
    for late in (False, True):
        body = client.post(
            "/embed/dense",
            json={"inputs": ["  "], "chunking": {"max_tokens": 8, "late": late}},
        ).json()
        assert [(c["start"], c["end"]) for c in chunks_of(body)] == [(0, 2)]
        np.testing.assert_allclose(
            chunks_of(body)[0]["embedding"], tiny_models.expected_dense(table, ""), atol=1e-6
        )


def test_bm25_and_late_sparse_chunking_are_refused() -> None:
    from tests.sparse_fixtures import BM25_DATA

    with serving(models=[str(BM25_DATA)]) as client:
        for chunking, message in [
            ({}, "chunking does not apply to bm25 models"),
            ({"late": True, "max_tokens": 8}, "does not do late chunking"),
        ]:
            response = client.post("/embed/sparse", json={"inputs": ["a"], "chunking": chunking})
            assert message in error_of(response, 400)["message"]

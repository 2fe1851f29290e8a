"""Overload: at many times the sustainable rate the service answers 429 quickly, the requests
it accepted finish with their full answers, and its memory stays bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import engine_registry, serving
from tests.prod_server import running
from tests.test_shutdown import passages, vectors
from tests.tiny_models import expected_dense


def burst(url: str, body: dict[str, object], clients: int) -> list[tuple[float, httpx.Response]]:
    """`clients` requests released at the same instant; (seconds, response) each."""
    barrier = threading.Barrier(clients)
    results: list[tuple[float, httpx.Response]] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(timeout=120) as client:
            barrier.wait()
            started = time.perf_counter()
            response = client.post(f"{url}/v1/embeddings", json=body)
            with lock:
                results.append((time.perf_counter() - started, response))

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return results


@pytest.mark.slow
def test_bursts_far_over_capacity_get_quick_429s_and_bounded_memory(real_minilm: Path) -> None:
    texts = passages(8, 40, seed=2)
    body = {"model": "all-MiniLM-L6-v2", "input": texts}
    env = {
        "EMBED_MODELS": f"sentence-transformers/all-MiniLM-L6-v2@{real_minilm}",
        "EMBED_MAX_CONCURRENT_REQUESTS": "4",
        "EMBED_LOG_LEVEL": "warning",
    }
    with running(env) as server:
        reference = vectors(httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60).json())
        process = psutil.Process(server.process.pid)
        rss: list[float] = []
        for _ in range(3):
            results = burst(server.url, body, clients=48)
            rss.append(process.memory_info().rss / 2**20)
            accepted = [r for _, r in results if r.status_code == 200]
            refused = [(s, r) for s, r in results if r.status_code == 429]
            assert len(accepted) + len(refused) == 48, {r.status_code for _, r in results}
            assert len(accepted) >= 4 and len(refused) >= 24
            for response in accepted:
                np.testing.assert_allclose(vectors(response.json()), reference, atol=1e-5)
            slowest = max(seconds for seconds, _ in refused)
            print(
                f"burst: {len(accepted)} accepted, {len(refused)} refused (slowest 429 "
                f"{slowest * 1000:.0f} ms), RSS {rss[-1]:.0f} MiB"
            )
            for seconds, response in refused:
                assert response.json()["error"]["code"] == "too_many_requests"
                assert response.headers["retry-after"] == "1"
                assert seconds < 1.0  # refused at once, not after waiting for capacity
        after = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
        assert after.status_code == 200
    assert rss[-1] < rss[0] * 1.10, rss  # three bursts: memory does not keep growing


def test_a_full_queue_answers_429_queue_full_and_recovers(
    tiny_dense: tuple[Path, np.ndarray],
) -> None:
    body = {"model": "tiny/dense", "input": ["hello world", "red cat", "one two"]}
    with serving(models=[str(tiny_dense[0])], queue_max_items=4) as client:
        model = engine_registry(client.app).models["tiny/dense"]  # type: ignore[attr-defined]
        gate = threading.Event()
        original = model.runners[0].run
        model.runners[0].run = lambda feeds: (gate.wait(10), original(feeds))[1]
        statuses: list[int] = []

        def call() -> None:
            statuses.append(client.post("/v1/embeddings", json=body).status_code)

        callers = [threading.Thread(target=call) for _ in range(3)]
        callers[0].start()  # taken into the held batch: queue empty again
        wait_for(lambda: len(model.batcher._inflight) == 1)
        callers[1].start()  # formed into the next batch, behind the held one
        wait_for(lambda: len(model.batcher._inflight) == 2)
        callers[2].start()  # 3 waiting inputs: fits under 4
        wait_for(lambda: model.batcher.depth == 3)
        refused = client.post("/v1/embeddings", json=body)  # 3 + 3 > 4
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        gate.set()
        for caller in callers:
            caller.join(10)
        assert statuses == [200, 200, 200]
        served = client.post("/v1/embeddings", json=body).json()
        got = np.array([item["embedding"] for item in served["data"]])
        want = np.stack([expected_dense(tiny_dense[1], text) for text in body["input"]])
        np.testing.assert_allclose(got, want, atol=1e-6)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)

"""Batching seen from HTTP: concurrent requests share inference calls and each caller gets
its own answer; a client that hangs up costs no inference."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from service.engine.runner import OnnxRunner
from tests import tiny_models
from tests.conftest import engine_registry, serving


class RecordingRunner:
    """Wraps a real session: records each batch's size and holds each call for `delay`."""

    def __init__(self, inner: OnnxRunner, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.batches: list[int] = []
        self.provider = inner.provider
        self.lock = threading.Lock()

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        with self.lock:
            self.batches.append(int(feeds["input_ids"].shape[0]))
        time.sleep(self.delay)
        return self.inner.run(feeds)


WORDS = tiny_models.WORDS[4:24]


def test_concurrent_http_requests_are_served_in_fewer_inference_calls(
    tiny_dense: tuple[Path, np.ndarray],
) -> None:
    directory, table = tiny_dense
    texts = [f"{WORDS[i % 20]} {WORDS[(i * 7) % 20]}" for i in range(24)]
    with serving(models=[str(directory)], max_wait_ms=20) as client:
        model = engine_registry(client.app).models["tiny/dense"]  # type: ignore[attr-defined]
        recorder = RecordingRunner(model.runners[0], delay=0.05)
        model.runners[0] = recorder

        def call(text: str) -> list[float]:
            body = client.post("/embed/dense", json={"inputs": [text]}).json()
            return list(body["embeddings"][0])

        with ThreadPoolExecutor(len(texts)) as pool:
            answers = list(pool.map(call, texts))
    assert sum(recorder.batches) == len(texts)
    assert len(recorder.batches) < len(texts) / 2, recorder.batches
    for text, answer in zip(texts, answers, strict=True):
        np.testing.assert_allclose(answer, tiny_models.expected_dense(table, text), atol=1e-6)


def test_token_id_inputs_count_against_the_input_limit(tiny_dense: tuple[Path, np.ndarray]) -> None:
    with serving(
        models=[str(tiny_dense[0])], max_inputs_per_request=2, token_id_inputs=True
    ) as client:
        response = client.post(
            "/v1/embeddings", json={"input": [[5], [6], [7]], "model": "tiny/dense"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "3 inputs in one request; the limit is 2"


def test_a_client_that_hangs_up_costs_no_inference(tiny_dense: tuple[Path, np.ndarray]) -> None:
    """Over a real socket: B disconnects while A's batch runs; B's input never reaches the
    session."""
    import json
    import socket

    import httpx
    import uvicorn

    from service.app import create_app
    from service.settings import Settings
    from tests.conftest import free_port

    port = free_port()
    app = create_app(Settings(models=[str(tiny_dense[0])]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        model = app.state.registry.models["tiny/dense"]
        recorder = RecordingRunner(model.runners[0], delay=0.6)
        seen: list[list[int]] = []
        inner_run = recorder.run

        def run(feeds: dict[str, Any]) -> list[Any]:
            seen.extend(feeds["input_ids"].tolist())
            return inner_run(feeds)

        recorder.run = run  # type: ignore[method-assign]
        model.runners[0] = recorder
        first = threading.Thread(
            target=lambda: httpx.post(f"{url}/embed/dense", json={"inputs": ["hello"]}, timeout=10)
        )
        first.start()
        time.sleep(0.2)  # A's batch is running now
        body = json.dumps({"inputs": ["nine ten"]}).encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /embed/dense HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.1)  # B is queued behind A; now B hangs up
        first.join()
        time.sleep(0.8)  # long enough for B's batch to have run, had it not been dropped
        vocab = tiny_models.vocabulary()
        assert [vocab["[CLS]"], vocab["hello"], vocab["[SEP]"]] in seen
        assert all(vocab["nine"] not in row for row in seen), seen
        assert httpx.post(f"{url}/embed/dense", json={"inputs": ["ten"]}).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)

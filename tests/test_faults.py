"""Fault injection: an inference session that raises, hangs or returns NaN for one batch fails
only that batch's requests, and the service goes on; a dead batcher loop turns /ready to 503,
a crashed one is restarted; an unexpected error gives a generic 500 carrying the request id."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.models.loaded import LoadedModel
from service.settings import Settings
from tests.conftest import engine_registry, wait_ready
from tests.tiny_models import expected_dense

SECRET = "/srv/secret/path.onnx exploded"
BODY = {"model": "tiny/dense", "input": ["hello world", "red cat"]}


class FaultyRunner:
    """Wraps a real runner; its next call raises, hangs (until released) or returns NaN."""

    def __init__(self, inner: Any, fault: str) -> None:
        self.inner = inner
        self.fault = fault
        self.release = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        fault, self.fault = self.fault, ""
        if fault == "raise":
            raise RuntimeError(SECRET)
        if fault == "hang":
            self.release.wait(30)
        outputs: list[np.ndarray] = self.inner.run(feeds)
        if fault == "nan":
            outputs[0] = np.full_like(outputs[0], np.nan)
        return outputs


@contextmanager
def service(tiny_dense: tuple[Path, np.ndarray], **settings: Any) -> Iterator[TestClient]:
    app = create_app(Settings(models=[str(tiny_dense[0])], **settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def model_of(client: TestClient) -> LoadedModel:
    model: LoadedModel = engine_registry(client.app).models["tiny/dense"]  # type: ignore[attr-defined]
    return model


def assert_served(client: TestClient, table: np.ndarray) -> None:
    response = client.post("/v1/embeddings", json=BODY)
    assert response.status_code == 200, response.text
    got = np.array([item["embedding"] for item in response.json()["data"]])
    want = np.stack([expected_dense(table, text) for text in BODY["input"]])
    np.testing.assert_allclose(got, want, atol=1e-6)


def assert_failed(response: Any, status: int, code: str, rid: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"] == rid
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "server_error"
    assert f"request id {rid}" in error["message"]
    assert SECRET not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("fault", "code"), [("raise", "inference_failed"), ("nan", "inference_failed")]
)
def test_a_failing_batch_fails_its_request_and_the_next_is_served(
    tiny_dense: tuple[Path, np.ndarray], fault: str, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    with service(tiny_dense) as client:
        model = model_of(client)
        model.runners[0] = FaultyRunner(model.runners[0], fault)  # type: ignore[assignment]
        with caplog.at_level(logging.ERROR):
            response = client.post("/v1/embeddings", json=BODY, headers={"x-request-id": "rq-1"})
        assert_failed(response, 500, code, "rq-1")
        assert_served(client, tiny_dense[1])
        assert client.get("/ready").status_code == 200
    if fault == "raise":  # the traceback goes to the log, not to the client
        assert any(SECRET in str(record.exc_info) for record in caplog.records)


def test_a_hung_batch_gets_503_and_a_fresh_thread_serves_the_next(
    tiny_dense: tuple[Path, np.ndarray],
) -> None:
    with service(tiny_dense, inference_timeout_s=0.3) as client:
        model = model_of(client)
        faulty = FaultyRunner(model.runners[0], "hang")
        model.runners[0] = faulty  # type: ignore[assignment]
        try:
            response = client.post("/v1/embeddings", json=BODY, headers={"x-request-id": "rq-2"})
            assert_failed(response, 503, "inference_timeout", "rq-2")
            assert_served(client, tiny_dense[1])  # while the old thread still hangs
            assert faulty.calls == 2
        finally:
            faulty.release.set()


def test_only_the_failing_batch_fails(tiny_dense: tuple[Path, np.ndarray]) -> None:
    """Two concurrent requests in separate batches: the first batch raises, the second is
    served (max_batch_items=2 puts each two-input request in its own batch)."""
    with service(tiny_dense, max_batch_items=2) as client:
        model = model_of(client)
        faulty = FaultyRunner(model.runners[0], "hang")
        model.runners[0] = faulty  # type: ignore[assignment]
        statuses: dict[str, int] = {}

        def call(name: str) -> None:
            statuses[name] = client.post("/v1/embeddings", json=BODY).status_code

        first = threading.Thread(target=call, args=("first",))
        first.start()
        while faulty.calls == 0:
            threading.Event().wait(0.005)
        faulty.fault = "raise"  # the first batch (now hanging) will be followed by a failing one
        second = threading.Thread(target=call, args=("second",))
        second.start()
        threading.Event().wait(0.1)
        faulty.release.set()
        first.join(10)
        second.join(10)
        assert statuses == {"first": 200, "second": 500}
        assert_served(client, tiny_dense[1])


def test_a_dead_worker_turns_ready_to_503(tiny_dense: tuple[Path, np.ndarray]) -> None:
    with service(tiny_dense) as client:
        batcher = model_of(client).batcher
        assert batcher is not None and batcher._task is not None
        task = batcher._task
        task.remove_done_callback(batcher._loop_ended)  # a death the batcher cannot undo
        client.portal.call(_cancel, task)  # type: ignore[attr-defined]
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["models"]["tiny/dense"]["worker_alive"] is False


async def _cancel(task: Any) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_crashed_worker_is_restarted(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    with service(tiny_dense) as client:
        batcher = model_of(client).batcher
        assert batcher is not None
        original = batcher._next_batch
        crashes = {"left": 1}

        async def crashing() -> Any:
            if crashes["left"]:
                crashes["left"] -= 1
                raise RuntimeError("loop bug")
            return await original()

        monkeypatch.setattr(batcher, "_next_batch", crashing)
        first = batcher._task
        # the loop is waiting inside the original _next_batch; wake it with a request, which
        # it serves, then the next round hits the crash and the loop restarts itself
        assert_served(client, tiny_dense[1])
        assert_served(client, tiny_dense[1])
        assert crashes["left"] == 0 and batcher._task is not first and batcher.alive
        assert client.get("/ready").status_code == 200


def test_an_unexpected_error_is_a_generic_500_with_the_request_id(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise KeyError(SECRET)

    monkeypatch.setattr("service.front.routes.dense.shape_vectors", broken)
    with service(tiny_dense) as client:
        response = client.post("/v1/embeddings", json=BODY, headers={"x-request-id": "rq-3"})
        assert response.status_code == 500
        assert response.headers["x-request-id"] == "rq-3"
        error = response.json()["error"]
        assert error == {
            "message": "internal server error (request id rq-3)",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }

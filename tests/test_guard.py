"""Admission control: API keys, CORS, body size, concurrency and draining refusals, and the
timing headers, on the in-process app with the tiny dense model."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.front.http.guard import declared_length, key_matches, public_requests
from service.settings import Settings
from tests.conftest import engine_registry, serving
from tests.envelope import error_of
from tests.routes import declared_public, every_request
from tests.tiny_models import expected_dense

EMBED = {"model": "tiny/dense", "input": ["hello world"]}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    error = error_of(response, status)
    assert error["code"] == code
    assert "Traceback" not in error["message"]
    return error


def test_key_comparison() -> None:
    keys = [b"alpha", b"beta"]
    assert key_matches(b"beta", keys)
    assert not key_matches(b"bet", keys)
    assert not key_matches(b"", keys)


def test_api_keys_guard_every_route_but_probes(tiny_dense: tuple[Path, np.ndarray]) -> None:
    with serving(models=[str(tiny_dense[0])], api_keys="k1,k2") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        for path in ("/metrics", "/models", "/v1/models", "/openapi.json"):
            assert_envelope(client.get(path), 401, "invalid_api_key")
        missing = client.post("/v1/embeddings", json=EMBED)
        assert_envelope(missing, 401, "invalid_api_key")
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/v1/embeddings", json=EMBED, headers={"Authorization": "Bearer k3"})
        assert_envelope(wrong, 401, "invalid_api_key")
        basic = client.post("/v1/embeddings", json=EMBED, headers={"Authorization": "Basic k1"})
        assert_envelope(basic, 401, "invalid_api_key")
        good = client.post("/v1/embeddings", json=EMBED, headers={"Authorization": "Bearer k2"})
        assert good.status_code == 200
        vector = np.array(good.json()["data"][0]["embedding"])
        np.testing.assert_allclose(vector, expected_dense(tiny_dense[1], "hello world"), atol=1e-6)


@pytest.mark.parametrize("ui", [True, False])
def test_every_route_and_method_needs_the_key_but_the_declared_public_ones(
    tiny_dense: tuple[Path, np.ndarray], ui: bool
) -> None:
    """Walks the route table, so a route added later is covered the day it is added. With
    keys set: 401 without the key, anything but 401 with it, except the declared public
    requests (issue 33: POST / embedded without a key)."""
    settings = {"models": [str(tiny_dense[0])], "api_keys": "k1", "ui": ui}
    chosen = Settings(**settings)
    public = public_requests(chosen)
    assert public == ({("GET", "/health"), ("GET", "/ready")} | ({("GET", "/")} if ui else set()))
    with serving(**settings) as client:
        requests = every_request(client.app)
        assert ("POST", "/") in requests and ("POST", "/v1/embeddings") in requests
        assert len(requests) > 30
        key = {"Authorization": "Bearer k1"}
        for method, path in requests:
            open_to_all = declared_public(chosen, method, path)
            body = {} if method in ("POST", "PUT", "PATCH") else None
            without = client.request(method, path, json=body)
            if open_to_all:
                assert without.status_code < 400, (method, path, without.status_code)
            else:
                assert without.status_code == 401, (method, path, without.status_code)
            with_key = client.request(method, path, json=body, headers=key)
            assert with_key.status_code != 401, (method, path)
            assert with_key.status_code < 500, (method, path, with_key.status_code)
        # the bug itself: TEI's bare-URL embed with the page on
        embedded = client.post("/", json={"inputs": "hello world"})
        assert_envelope_or_tei(embedded)
        assert client.post("/", json={"inputs": "hello world"}, headers=key).status_code == 200


def assert_envelope_or_tei(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert "hello" not in response.text and "[" not in response.text[:2]


def test_metrics_can_be_opened_while_keys_are_set(tiny_dense: tuple[Path, np.ndarray]) -> None:
    with serving(models=[str(tiny_dense[0])], api_keys="k1", metrics_public=True) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/models").status_code == 401


def test_cors_is_off_by_default_and_configurable(tiny_dense: tuple[Path, np.ndarray]) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with serving(models=[str(tiny_dense[0])]) as client:
        response = client.get("/health", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in response.headers
    with serving(
        models=[str(tiny_dense[0])], cors_origins="https://app.example", api_keys="k1"
    ) as client:
        response = client.options("/v1/embeddings", headers=preflight)
        assert response.status_code == 200  # a preflight needs no key
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/v1/embeddings", headers={**preflight, "Origin": "https://evil"})
        assert other.status_code == 400


def test_body_over_the_limit_is_413_before_reading(tiny_dense: tuple[Path, np.ndarray]) -> None:
    with serving(models=[str(tiny_dense[0])], max_body_bytes=2048) as client:
        big = {"model": "tiny/dense", "input": ["hello " * 400]}
        assert_envelope(client.post("/v1/embeddings", json=big), 413, "request_too_large")

        def chunks() -> Iterator[bytes]:
            yield b'{"model": "tiny/dense", "input": ["'
            for _ in range(100):
                yield b"hello " * 10
            yield b'"]}'

        chunked = client.post(
            "/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_envelope(chunked, 413, "request_too_large")

        def small() -> Iterator[bytes]:
            yield b'{"model": "tiny/dense", '
            yield b'"input": ["hello world"]}'

        ok = client.post(
            "/v1/embeddings", content=small(), headers={"Content-Type": "application/json"}
        )
        assert ok.status_code == 200
        vector = np.array(ok.json()["data"][0]["embedding"])
        np.testing.assert_allclose(vector, expected_dense(tiny_dense[1], "hello world"), atol=1e-6)


def test_too_many_concurrent_requests_get_429(tiny_dense: tuple[Path, np.ndarray]) -> None:
    with serving(models=[str(tiny_dense[0])], max_concurrent_requests=2) as client:
        model = engine_registry(client.app).models["tiny/dense"]
        gate = threading.Event()
        original = model.runners[0].run

        def held(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            gate.wait(10)
            return original(feeds)

        model.runners[0].run = held
        results: list[int] = []

        def call() -> None:
            results.append(client.post("/v1/embeddings", json=EMBED).status_code)

        threads = [threading.Thread(target=call) for _ in range(2)]
        for thread in threads:
            thread.start()
        guard_active = _guard(client)
        _wait_for(lambda: guard_active() == 2)
        refused = client.post("/v1/embeddings", json=EMBED)
        assert_envelope(refused, 429, "too_many_requests")
        assert refused.headers["retry-after"] == "1"
        assert client.get("/ready").status_code == 200  # probes are never refused
        gate.set()
        for thread in threads:
            thread.join(10)
        assert results == [200, 200]


def test_batch_job_lines_neither_count_nor_are_refused_against_the_live_limit(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """A job with more lines in flight (EMBED_BATCH_CONCURRENCY) than the live limit: its
    lines are not refused (429) and take no live slot, so status polls and a live request
    get through while they run."""
    settings = {
        "models": [str(tiny_dense[0])],
        "data_dir": tmp_path / "data",
        "max_concurrent_requests": 2,
        "batch_concurrency": 6,
        "cache_max_entries": 0,
    }
    with serving(**settings) as client:
        model = engine_registry(client.app).models["tiny/dense"]
        gate, entered = threading.Event(), threading.Event()
        original = model.runners[0].run

        def held(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            entered.set()
            gate.wait(10)
            return original(feeds)

        model.runners[0].run = held
        lines = [
            json.dumps(
                {
                    "custom_id": f"l{n}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": "tiny/dense", "input": [f"line {n}"]},
                }
            )
            for n in range(6)
        ]
        upload = {"file": ("in.jsonl", ("\n".join(lines) + "\n").encode())}
        file_id = client.post("/v1/files", files=upload, data={"purpose": "batch"}).json()["id"]
        job = {"input_file_id": file_id, "endpoint": "/v1/embeddings"}
        batch_id = client.post("/v1/batches", json=job).json()["id"]
        assert entered.wait(10)  # a bulk batch runs, the other lines wait behind it
        guard_active = _guard(client)
        assert guard_active() == 0
        status = client.get(f"/v1/batches/{batch_id}")
        assert status.status_code == 200 and status.json()["status"] == "in_progress"
        live: list[int] = []
        caller = threading.Thread(
            target=lambda: live.append(client.post("/v1/embeddings", json=EMBED).status_code)
        )
        caller.start()
        _wait_for(lambda: guard_active() == 1)  # admitted, waiting for the held session
        gate.set()
        caller.join(10)
        assert live == [200]
        deadline = time.monotonic() + 30
        while (batch := client.get(f"/v1/batches/{batch_id}").json())["status"] != "completed":
            assert time.monotonic() < deadline, batch
            time.sleep(0.02)
        output = client.get(f"/v1/files/{batch['output_file_id']}/content").text
    answers = [json.loads(line)["response"] for line in output.splitlines()]
    assert [a["status_code"] for a in answers] == [200] * 6
    assert batch["request_counts"] == {"total": 6, "completed": 6, "failed": 0}


def test_draining_refuses_new_work_but_not_probes(tiny_client: TestClient) -> None:
    client = tiny_client
    client.app.state.registry.draining = True
    refused = client.post("/v1/embeddings", json=EMBED)
    assert_envelope(refused, 503, "shutting_down")
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"
    assert client.get("/health").status_code == 200
    client.app.state.registry.draining = False


def test_timing_headers(tiny_client: TestClient) -> None:
    model = engine_registry(tiny_client.app).models["tiny/dense"]
    original = model.runners[0].run

    def slow(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        time.sleep(0.05)
        return original(feeds)

    model.runners[0].run = slow
    response = tiny_client.post("/v1/embeddings", json=EMBED)
    model.runners[0].run = original
    times = {
        p: float(response.headers[f"x-{p}-time-ms"])
        for p in ("tokenize", "queue", "inference", "total")
    }
    assert 50 <= times["inference"] < times["total"]  # the 50 ms session is inference
    assert 0 <= times["queue"] < 50 and 0 <= times["tokenize"] < 50  # an idle model
    assert times["tokenize"] + times["queue"] + times["inference"] <= times["total"]
    health = tiny_client.get("/health")
    assert "x-total-time-ms" in health.headers and "x-inference-time-ms" not in health.headers


def _guard(client: TestClient) -> Callable[[], int]:
    """The Guard instance inside the app's middleware stack, to read its counter."""
    app = client.app
    layer = app.middleware_stack
    while layer is not None and type(layer).__name__ != "Guard":
        layer = getattr(layer, "app", None)
    assert layer is not None
    return lambda: layer.active


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)

    asyncio.run(poll())


@pytest.mark.parametrize("header", ["12x", "-5"])
def test_bad_content_length_is_400(header: str) -> None:
    scope = {"headers": [(b"content-length", header.encode())]}
    with pytest.raises(Exception) as info:
        declared_length(scope)
    assert getattr(info.value, "status", None) == 400

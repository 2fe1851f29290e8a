"""The result cache: identical inputs run once, cached results equal fresh ones under every
option, the memory bounds hold, and a shared Redis (a real redis-server) serves several
replicas and can go away without taking the service with it."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.cache import shared
from service.cache.results import MemoryCache, ResultCache, size_of, submit_cached
from service.cache.shared import decode, encode
from tests import tiny_models
from tests.conftest import free_port, serving

MODEL = "tiny/dense"


def counter(client: TestClient, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.M)
    return float(match[1]) if match else 0.0


def run_inputs(client: TestClient) -> float:
    """Inputs that went through inference so far."""
    return counter(client, 'embed_batch_size_sum{model="tiny/dense"}')


def vectors(body: dict) -> np.ndarray:
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


@pytest.fixture
def cached_client(tiny_dense: tuple[Path, np.ndarray]) -> Iterator[TestClient]:
    with serving(models=[str(tiny_dense[0])], cache_max_entries=1000) as client:
        yield client


def test_identical_inputs_run_once_and_repeats_come_from_the_cache(
    cached_client: TestClient, tiny_dense: tuple[Path, np.ndarray]
) -> None:
    _, table = tiny_dense
    texts = ["hello world", "the cat sat", "hello world", "red dog"]
    expected = np.stack([tiny_models.expected_dense(table, t) for t in texts])
    before = run_inputs(cached_client)
    first = cached_client.post("/v1/embeddings", json={"input": texts, "model": MODEL}).json()
    np.testing.assert_allclose(vectors(first), expected, atol=1e-6)
    assert first["usage"] == {
        "prompt_tokens": 4 + 5 + 4 + 4,
        "total_tokens": 17,
        "cached_inputs": 1,
    }
    assert run_inputs(cached_client) - before == 3

    again = cached_client.post("/v1/embeddings", json={"input": texts, "model": MODEL}).json()
    assert np.array_equal(vectors(again), vectors(first))  # bit for bit
    assert again["usage"]["cached_inputs"] == 4 and again["usage"]["prompt_tokens"] == 17
    assert run_inputs(cached_client) - before == 3  # nothing ran
    assert counter(cached_client, 'embed_cache_inputs_total{model="tiny/dense",outcome="hit"}') == 5
    assert (
        counter(cached_client, 'embed_cache_inputs_total{model="tiny/dense",outcome="miss"}') == 3
    )
    ready = cached_client.get("/ready").json()["cache"]
    assert ready["memory"]["entries"] == 3 and ready["shared"] is None


def test_options_applied_after_inference_give_what_fresh_inference_gives(
    cached_client: TestClient, tiny_dense: tuple[Path, np.ndarray]
) -> None:
    _, table = tiny_dense
    text = "the blue dog sat on the mat"
    raw = tiny_models.expected_dense(table, text, normalize=False)
    cached_client.post("/embed/dense", json={"inputs": [text], "model": MODEL})  # fills
    for options, want in (
        ({"normalize": False}, raw),
        ({"dimensions": 3}, raw[:3] / np.linalg.norm(raw[:3])),
        ({}, raw / np.linalg.norm(raw)),
    ):
        body = cached_client.post(
            "/embed/dense", json={"inputs": [text], "model": MODEL, **options}
        ).json()
        assert body["usage"]["cached_inputs"] == 1
        np.testing.assert_allclose(body["embeddings"][0], want, atol=1e-6)


def test_the_memory_cache_keeps_to_its_entry_and_byte_bounds_lru_first() -> None:
    vector = np.zeros(96, dtype=np.float32)  # 384 bytes of data
    per = size_of(vector)
    cache = MemoryCache(max_entries=3, max_bytes=10 * per)
    cache.put_many({bytes([n]): vector for n in range(3)})
    cache.get_many([b"\x00"])  # used: now the most recent
    cache.put_many({b"\x03": vector})
    assert set(cache.get_many([bytes([n]) for n in range(4)])) == {b"\x00", b"\x02", b"\x03"}
    small = MemoryCache(max_entries=100, max_bytes=2 * per)
    small.put_many({bytes([n]): vector for n in range(5)})
    assert len(small) == 2 and small.bytes == 2 * per
    small.put_many({b"big": np.zeros(1000, dtype=np.float32)})  # larger than the whole cache
    assert len(small) == 2 and b"big" not in small.get_many([b"big"])


def test_the_shared_encoding_round_trips_arrays_and_refuses_objects() -> None:
    values = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        (np.array([3, 9], dtype=np.int64), np.array([0.5, 0.25], dtype=np.float32)),
        [1.5, 7],
        np.float32(0.125),
    ]
    for value in values:
        back = decode(encode(value))
        assert type(back) is type(value) or isinstance(value, np.floating)
        flat = [value] if not isinstance(value, tuple | list) else list(value)
        back_flat = [back] if not isinstance(back, tuple | list) else list(back)
        for a, b in zip(flat, back_flat, strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
            assert np.asarray(a).dtype == np.asarray(b).dtype or np.isscalar(a)
    with pytest.raises(shared.Unencodable):
        encode(np.array([object()]))
    with pytest.raises(ValueError):
        decode(encode(np.ones(3)) + b"x")


# --- a real redis-server ------------------------------------------------------------------
REDIS = shutil.which("redis-server")


def start_redis(port: int) -> subprocess.Popen[bytes]:
    assert REDIS, "redis-server is missing: apt-get install redis-server (.ci/run does)"
    process = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            client.close()
            return process
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)


@pytest.fixture
def redis_port() -> Iterator[int]:
    port = free_port()
    process = start_redis(port)
    yield port
    process.terminate()
    process.wait(10)


def test_replicas_share_results_through_redis_and_serve_without_it_when_it_goes(
    tiny_dense: tuple[Path, np.ndarray], redis_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, table = tiny_dense
    monkeypatch.setattr(shared, "RETRY_S", 0.2)
    url = f"redis://127.0.0.1:{redis_port}/0"
    texts = ["hello world", "the cat sat on the mat"]
    expected = np.stack([tiny_models.expected_dense(table, t) for t in texts])
    body = {"input": texts, "model": MODEL}
    settings = {"models": [str(tiny_dense[0])], "redis_url": url}
    with serving(**settings) as first:
        assert first.post("/v1/embeddings", json=body).json()["usage"].get("cached_inputs") is None
    # a second replica, with no memory cache of its own: everything from Redis
    with serving(**settings, cache_max_entries=0) as second:
        before = run_inputs(second)
        answer = second.post("/v1/embeddings", json=body).json()
        assert answer["usage"]["cached_inputs"] == 2 and run_inputs(second) == before
        np.testing.assert_allclose(vectors(answer), expected, atol=1e-6)
        assert second.get("/ready").json()["cache"]["shared"]["status"] == "ok"

        redis_process = [p for p in _children("redis-server") if str(redis_port) in p]
        assert redis_process
        subprocess.run(["redis-cli", "-p", str(redis_port), "shutdown", "nosave"], check=False)
        answer = second.post("/v1/embeddings", json=body)
        assert answer.status_code == 200  # uncached, still right
        assert "cached_inputs" not in answer.json()["usage"]
        np.testing.assert_allclose(vectors(answer.json()), expected, atol=1e-6)
        ready = second.get("/ready")
        assert ready.status_code == 200
        state = ready.json()["cache"]["shared"]
        assert state["status"] == "unavailable" and "Connection" in state["error"]

        back = start_redis(redis_port)  # back, empty
        try:
            time.sleep(0.3)  # past RETRY_S
            second.post("/v1/embeddings", json=body)  # misses; written again
            answer = second.post("/v1/embeddings", json=body).json()
            assert answer["usage"]["cached_inputs"] == 2
            assert second.get("/ready").json()["cache"]["shared"]["status"] == "ok"
        finally:
            back.terminate()
            back.wait(10)


def _children(name: str) -> list[str]:
    found = subprocess.run(["pgrep", "-a", name], capture_output=True, text=True, check=False)
    return found.stdout.splitlines()


class FakeModel:
    """What submit_cached needs of a model: a name, spec, variant, provider and a batcher
    whose submit can be held, counting the inputs that run."""

    class Spec:
        name = "fake"
        kind = "dense"

    spec = Spec()
    name = "fake"
    variant = "fp32"
    provider = "cpu"

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gate = asyncio.Event()
        self.batcher = self

    async def submit(self, prepare: Callable[[], Any]) -> list[Any]:
        items = prepare()
        await self.gate.wait()
        self.ran += [payload for _, payload in items]
        return [np.array([len(payload)], dtype=np.float32) for _, payload in items]


async def test_requests_in_flight_at_once_run_an_input_once_and_survive_the_owner_leaving() -> None:
    model = FakeModel()
    cache = ResultCache(MemoryCache(100, 1 << 20))
    texts = ["aa", "bbb", "aa"]
    first = asyncio.create_task(submit_cached(model, lambda: [(1, t) for t in texts], cache))
    await asyncio.sleep(0.05)  # its inputs are claimed, waiting at the gate
    second = asyncio.create_task(submit_cached(model, lambda: [(1, "bbb"), (1, "c")], cache))
    await asyncio.sleep(0.05)
    model.gate.set()
    one, two = await asyncio.gather(first, second)
    assert [float(v[0]) for v in one] == [2, 3, 2] and [float(v[0]) for v in two] == [3, 1]
    assert sorted(model.ran) == ["aa", "bbb", "c"]  # "bbb" once for both requests

    model.gate.clear()
    owner = asyncio.create_task(submit_cached(model, lambda: [(1, "dddd")], cache))
    await asyncio.sleep(0.05)
    waiter = asyncio.create_task(submit_cached(model, lambda: [(1, "dddd")], cache))
    await asyncio.sleep(0.05)
    owner.cancel()  # its caller went away: the waiter runs the input itself
    await asyncio.sleep(0.05)
    model.gate.set()
    assert [float(v[0]) for v in await waiter] == [4]
    assert model.ran.count("dddd") == 1

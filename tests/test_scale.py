"""Scaling on CPU with tiny models: reusable padded buffers, the shape grid and its warming,
replica count and dispatch (two sessions really run batches at the same time), adaptive
sessions sharing one copy of the weights, and the GPU batch profile."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine.batcher import BatchConfig, Batcher
from service.engine.loading import hub_options, load_model
from service.engine.runner import CPU, CUDA, OnnxRunner
from service.engine.scaling import (
    available_cores,
    batch_config,
    replica_count,
    session_layout,
    session_threads,
    shape_grid,
    warmed_rows,
)
from service.models.buffers import PadBuffers, padded_width
from service.models.kinds.dense import prepare_texts
from service.models.store import resolve_reference
from service.models.text import Encoded, pad_batch
from service.settings import Settings
from tests import tiny_models
from tests.conftest import engine_registry, serving


def encoded(rng: np.random.Generator, n: int, longest: int, types: bool = False) -> list[Encoded]:
    lengths = rng.integers(1, longest + 1, size=n)
    lengths[0] = longest
    return [
        Encoded(
            rng.integers(1, 30, size=k).astype(np.int64),
            rng.integers(0, 2, size=k).astype(np.int64) if types else None,
        )
        for k in lengths
    ]


@pytest.mark.parametrize("types", [False, True])
def test_buffers_pad_exactly_like_pad_batch(types: bool) -> None:
    rng = np.random.default_rng(1)
    buffers = PadBuffers()
    for n, longest in ((1, 1), (5, 9), (17, 3), (8, 40)):
        items = encoded(rng, n, longest, types)
        got, expected = buffers.pad(items, pad_id=7), pad_batch(items, 7)
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
            assert got[name].flags.c_contiguous and got[name].dtype == np.int64


def test_buffers_are_reused_across_batches_and_grow_only_when_needed() -> None:
    rng = np.random.default_rng(2)
    buffers = PadBuffers()
    first = buffers.pad(encoded(rng, 8, 10), 0)["input_ids"]
    smaller = buffers.pad(encoded(rng, 4, 5), 0)
    again = buffers.pad(encoded(rng, 8, 10), 0)["input_ids"]
    assert buffers.allocations == 1
    assert np.shares_memory(first, again) and np.shares_memory(first, smaller["input_ids"])
    np.testing.assert_array_equal(smaller["attention_mask"].sum(axis=1).max(), 5)
    buffers.pad(encoded(rng, 64, 40), 0)  # bigger than the first set: one new allocation
    buffers.pad(encoded(rng, 64, 40), 0)
    assert buffers.allocations == 2


def test_each_worker_thread_pads_into_its_own_buffers() -> None:
    buffers = PadBuffers()
    items = encoded(np.random.default_rng(3), 4, 6)
    with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(1) as other:
        a = one.submit(buffers.pad, items, 0).result()["input_ids"]
        b = other.submit(buffers.pad, items, 0).result()["input_ids"]
    assert not np.shares_memory(a, b)
    assert buffers.allocations == 2


def test_widths_round_up_to_the_multiple_within_the_cap() -> None:
    assert [padded_width(n, 8, 16) for n in (1, 8, 9, 16)] == [8, 8, 16, 16]
    assert padded_width(13, 8, 12) == 13  # the cap never cuts an input
    assert [padded_width(n, 1, 16) for n in (1, 9)] == [1, 9]
    items = encoded(np.random.default_rng(4), 3, 9)
    feeds = PadBuffers(multiple=8, cap=64).pad(items, 0)
    assert feeds["input_ids"].shape == (3, 16)
    assert feeds["attention_mask"][:, 9:].sum() == 0


def test_shape_grid_covers_every_width_within_the_token_budget() -> None:
    grid = shape_grid(max_items=1024, max_tokens=65536, max_length=256, multiple=8)
    widths = {width for _, width in grid}
    assert widths == set(range(8, 257, 8))  # every width the GPU padder can produce
    assert all(size * width <= 65536 or size == 1 for size, width in grid)
    assert (1024, 64) in grid and (256, 256) in grid and (1, 8) in grid
    assert max(size for size, _ in grid) == 1024
    costs = [size * width for size, width in grid]
    assert costs == sorted(costs, reverse=True)


def load_tiny(directory: Path, **values: Any) -> Any:
    settings = Settings(models=[str(directory)], **values)
    spec = resolve_reference(str(directory), {})
    return load_model(spec, settings, hub_options(settings))


@pytest.fixture
def recorded_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
    """(runner id, input_ids shape) of every session run."""
    runs: list[tuple[int, tuple[int, ...]]] = []
    original = OnnxRunner.run

    def run(self: OnnxRunner, feeds: Any) -> Any:
        runs.append((id(self), tuple(feeds["input_ids"].shape)))
        return original(self, feeds)

    monkeypatch.setattr(OnnxRunner, "run", run)
    yield runs


def test_warming_runs_every_shape_of_the_grid_on_every_session(
    tiny_dense: tuple[Path, np.ndarray], recorded_runs: list[tuple[int, tuple[int, ...]]]
) -> None:
    model = load_tiny(
        tiny_dense[0], warm_shapes="on", replicas=2, max_batch_items=16, max_batch_tokens=64
    )
    grid = shape_grid(16, 64, tiny_models.MAX_LENGTH, 1)
    assert len(model.runners) == 2
    for runner in model.runners:
        shapes = {shape for rid, shape in recorded_runs if rid == id(runner)}
        assert set(grid) <= shapes


def test_no_shape_warming_on_cpu_by_default(
    tiny_dense: tuple[Path, np.ndarray], recorded_runs: list[tuple[int, tuple[int, ...]]]
) -> None:
    model = load_tiny(tiny_dense[0], replicas=1)
    assert len(recorded_runs) == 1 and model.provider == CPU  # the one warm-up batch


def test_a_pad_multiple_does_not_change_the_vectors(tiny_dense: tuple[Path, np.ndarray]) -> None:
    directory, table = tiny_dense
    model = load_tiny(directory, replicas=1)
    assert isinstance(model.resources, PadBuffers)
    texts = ["hello world", "the cat sat on the mat", "red"]
    payloads = [payload for _, payload in prepare_texts(model, texts, None, True)]
    plain = np.stack(model.process(0, payloads))
    model.resources.multiple = 8
    rounded = np.stack(model.process(0, payloads))
    np.testing.assert_allclose(rounded, plain, atol=1e-6)
    expected = np.stack([tiny_models.expected_dense(table, t, normalize=False) for t in texts])
    np.testing.assert_allclose(plain, expected, atol=1e-6)


def test_rounded_rows_run_a_warmed_shape_and_do_not_change_the_vectors(
    tiny_dense: tuple[Path, np.ndarray], recorded_runs: list[tuple[int, tuple[int, ...]]]
) -> None:
    model = load_tiny(tiny_dense[0], replicas=1)
    assert isinstance(model.resources, PadBuffers)
    texts = ["hello world", "the cat sat on the mat", "red"]
    payloads = [payload for _, payload in prepare_texts(model, texts, None, True)]
    plain = np.stack(model.process(0, payloads))
    model.resources.rows_for = functools.partial(warmed_rows, max_items=16, max_tokens=64)
    rounded = model.process(0, payloads)
    assert len(rounded) == 3 and recorded_runs[-1][1][0] == 4  # 3 inputs ran as 4 rows
    np.testing.assert_allclose(np.stack(rounded), plain, atol=1e-6)
    feeds = model.resources.pad(payloads, 0)
    for name in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(feeds[name][3], feeds[name][0])  # the extra row repeats


def test_warmed_rows_are_sizes_of_the_shape_grid() -> None:
    grid = set(shape_grid(max_items=1024, max_tokens=65536, max_length=256, multiple=8))
    for width in range(8, 257, 8):
        for items in range(1, min(1024, 65536 // width) + 1):
            rows = warmed_rows(items, width, 1024, 65536)
            assert rows >= items and (rows, width) in grid
            assert rows < 2 * items  # the next power of two at most
    assert [warmed_rows(n, 64, 1024, 65536) for n in (1, 3, 5, 529, 1000)] == [1, 4, 8, 1024, 1024]
    assert warmed_rows(300, 256, 1024, 65536) == 300  # over the budget at this width: as is


def test_replica_count_and_the_gpu_batch_profile() -> None:
    auto = Settings(replicas=0)  # sessions of max(2, isqrt(cores)) threads: measured best splits
    assert [replica_count(auto, CPU, cores=n) for n in (1, 2, 4, 8, 16, 32)] == [1, 1, 2, 4, 4, 6]
    four = Settings(replicas=0, cpu_threads_per_replica=4)
    assert replica_count(four, CPU, cores=16) == 4
    assert replica_count(four, CPU, cores=2) == 1
    assert replica_count(auto, CUDA, cores=16) == 1
    assert replica_count(Settings(replicas=3), CUDA, cores=16) == 3
    # intra_op_threads fixes a session's size: the cores hold that many sessions
    assert replica_count(Settings(replicas=0, intra_op_threads=2), CPU, cores=16) == 8
    assert replica_count(Settings(replicas=0, intra_op_threads=16), CPU, cores=16) == 1
    assert session_threads(Settings(), 4, cores=16) == 4
    assert session_threads(Settings(intra_op_threads=3), 4, cores=16) == 3
    cpu, gpu = batch_config(Settings(), CPU), batch_config(Settings(), CUDA)
    assert Settings.model_fields["replicas"].default == 0  # auto (tests pin 1: conftest)
    assert (cpu.max_items, cpu.max_tokens) == (32, 8192)
    assert (gpu.max_items, gpu.max_tokens) == (1024, 65536)
    assert gpu.window >= 4 * gpu.max_items  # room to sort by length
    for kind in ("sparse", "image", "late", "rerank", "multimodal"):
        assert batch_config(Settings(), CUDA, kind).max_items == 32  # outputs grow with batch


async def test_two_workers_run_batches_at_the_same_time() -> None:
    """Each batch waits at a barrier for the other: both must be inside `process` at once."""
    barrier = threading.Barrier(2, timeout=5)
    workers: list[int] = []

    def process(worker: int, payloads: Any) -> list[int]:
        workers.append(worker)
        barrier.wait()
        return [2 * p for p in payloads]

    batcher = Batcher("m", process, workers=2, config=BatchConfig(max_items=2, max_wait_s=0))
    batcher.start()
    try:
        results = await asyncio.gather(
            batcher.enqueue([(1, 1), (1, 2)]), batcher.enqueue([(1, 3), (1, 4)])
        )
    finally:
        await batcher.stop()
    assert results == [[2, 4], [6, 8]]
    assert sorted(workers) == [0, 1]


def test_served_replicas_are_separate_sessions_running_concurrently(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, table = tiny_dense
    barrier = threading.Barrier(2, timeout=10)
    seen: set[int] = set()
    original = OnnxRunner.run
    armed = threading.Event()

    def run(self: OnnxRunner, feeds: Any) -> Any:
        if armed.is_set():
            seen.add(id(self))
            barrier.wait()  # a lone session would wait here until the timeout breaks it
        return original(self, feeds)

    monkeypatch.setattr(OnnxRunner, "run", run)
    with serving(models=[str(directory)], replicas=2, max_batch_items=1) as client:
        armed.set()
        texts = ["hello world", "the red cat"]
        with ThreadPoolExecutor(2) as pool:
            responses = list(
                pool.map(lambda t: client.post("/embed/dense", json={"inputs": [t]}), texts)
            )
        sessions = client.get("/ready").json()["models"]["tiny/dense"]["sessions"]
    assert [r.status_code for r in responses] == [200, 200]
    assert len(seen) == 2 and sessions == 2
    for response, text in zip(responses, texts, strict=True):
        expected = tiny_models.expected_dense(table, text)
        np.testing.assert_allclose(response.json()["embeddings"][0], expected, atol=1e-6)


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_fails_at_start_with_a_clear_reason(
    tiny_dense: tuple[Path, np.ndarray],
) -> None:
    app = create_app(Settings(models=[str(tiny_dense[0])], execution_provider="cuda"))
    with TestClient(app) as client:
        for _ in range(500):
            body = client.get("/ready").json()
            if body.get("reason"):
                break
            time.sleep(0.01)
    assert "no CUDA provider" in body["reason"] and "onnxruntime-gpu" in body["reason"]
    assert body["status"] == "not_ready" and body["models"] == {}


def test_available_cores_honour_a_container_cpu_quota(tmp_path: Path) -> None:
    own = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs: two threads may run
    assert available_cores(quota) == min(own, 2)
    quota.write_text("max 100000\n")
    assert available_cores(quota) == own
    assert available_cores(tmp_path / "missing") == own


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has CUDA")
def test_the_gpu_bench_refuses_without_cuda_and_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import gpu

    assert gpu.main() == 2
    message = capsys.readouterr().err
    assert "needs CUDA" in message and "onnxruntime-gpu" in message


def test_adaptive_layout_only_where_auto_gives_one_cpu_session_of_several_threads() -> None:
    auto = Settings(replicas=0)
    assert session_layout(auto, CPU, "dense", cores=2) == ([2, 1, 1], True)
    assert session_layout(auto, CPU, "dense", cores=3) == ([3, 1, 1, 1], True)
    assert session_layout(auto, CPU, "dense", cores=1) == ([1], False)
    assert session_layout(auto, CPU, "dense", cores=16) == ([4, 4, 4, 4], False)
    pinned = Settings(replicas=0, intra_op_threads=16)  # the k8s base on a 16-CPU pod
    assert session_layout(pinned, CPU, "dense", cores=16) == ([16], False)
    assert session_layout(Settings(replicas=0, intra_op_threads=2), CPU, "dense", cores=2)[1]
    assert session_layout(auto, CUDA, "dense", cores=2) == ([2], False)
    assert session_layout(auto, CPU, "sparse", cores=2) == ([2], False)
    assert session_layout(Settings(replicas=1), CPU, "dense", cores=2) == ([2], False)
    assert session_layout(Settings(replicas=2), CPU, "dense", cores=2) == ([1, 1], False)
    off = Settings(replicas=0, adaptive_sessions=False)
    assert session_layout(off, CPU, "dense", cores=2) == ([2], False)
    assert Settings.model_fields["adaptive_sessions"].default is True


def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.engine.scaling.available_cores", lambda *_: 2)


def test_adaptive_sessions_share_one_copy_of_the_weights_and_agree(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    two_cores(monkeypatch)
    directory, table = tiny_dense
    model = load_tiny(directory, replicas=0)
    assert model.solo and [runner.threads for runner in model.runners] == [2, 1, 1]
    weights = model.runners[0].weights
    assert weights is not None and all(r.weights is weights for r in model.runners)
    np.testing.assert_array_equal(weights.arrays["table"], table)
    del weights
    gc.collect()  # the sessions read the shared values in place: they must still be alive
    texts = ["hello world", "the red cat sat"]
    payloads = [payload for _, payload in prepare_texts(model, texts, None, True)]
    expected = np.stack([tiny_models.expected_dense(table, t, normalize=False) for t in texts])
    for worker in range(3):
        np.testing.assert_allclose(np.stack(model.process(worker, payloads)), expected, atol=1e-6)


def test_adaptive_sessions_fall_back_to_one_session_when_the_weights_are_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    two_cores(monkeypatch)
    table = tiny_models.build_dense_model(tmp_path)
    graph = onnx.load(str(tmp_path / "model.onnx"))
    # the table goes to a file of its own (ONNX Runtime needs the small constants inline)
    onnx.save(graph, str(tmp_path / "model.onnx"), save_as_external_data=True, size_threshold=64)
    model = load_tiny(tmp_path, replicas=0)
    assert not model.solo and [runner.threads for runner in model.runners] == [2]
    assert "adaptive sessions off" in caplog.text
    payloads = [payload for _, payload in prepare_texts(model, ["one two"], None, True)]
    expected = tiny_models.expected_dense(table, "one two", normalize=False)
    np.testing.assert_allclose(model.process(0, payloads)[0], expected, atol=1e-6)


def test_served_adaptive_sessions_report_their_threads_and_serve_solo_then_side_by_side(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    two_cores(monkeypatch)
    directory, table = tiny_dense
    threads_run: list[int] = []
    original = OnnxRunner.run

    def slow_run(self: OnnxRunner, feeds: Any) -> Any:
        threads_run.append(self.threads)
        time.sleep(0.02)  # long enough for the other requests to queue behind a batch
        return original(self, feeds)

    monkeypatch.setattr(OnnxRunner, "run", slow_run)
    with serving(models=[str(directory)], replicas=0, max_batch_items=1) as client:
        threads_run.clear()  # the warm-up runs
        state = client.get("/ready").json()["models"]["tiny/dense"]
        lone = client.post("/embed/dense", json={"inputs": ["hello world"]})
        batcher = engine_registry(client.app).models["tiny/dense"].batcher  # type: ignore[attr-defined]
        solo_after_lone = batcher.solo_batches
        texts = [f"{a} {b}" for a in tiny_models.WORDS[4:12] for b in ("cat", "dog")]
        with ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(lambda t: client.post("/embed/dense", json={"inputs": [t]}), texts)
            )
        metrics = client.get("/metrics").text
    solo_line = f'embed_solo_batches_total{{model="tiny/dense"}} {float(batcher.solo_batches)}'
    assert solo_line in metrics
    assert state["session_threads"] == [2, 1, 1] and state["sessions"] == 3
    assert lone.status_code == 200 and solo_after_lone == 1
    assert threads_run[0] == 2 and threads_run.count(1) >= len(texts) // 2
    assert batcher.solo_batches == threads_run.count(2)
    for response, text in zip(responses, texts, strict=True):
        expected = tiny_models.expected_dense(table, text)
        np.testing.assert_allclose(response.json()["embeddings"][0], expected, atol=1e-6)


@pytest.mark.parametrize("arena", [True, False])
def test_every_session_gets_the_memory_arena_setting(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch, arena: bool
) -> None:
    two_cores(monkeypatch)  # adaptive: three sessions
    directory, _ = tiny_dense
    model = load_tiny(directory, replicas=0, ort_memory_arena=arena)
    options = [runner.session.get_session_options() for runner in model.runners]
    assert len(options) == 3
    assert [o.enable_cpu_mem_arena for o in options] == [arena] * 3

"""A live batch stops the bulk batch running on its worker (service/engine/preemption.py):
the bulk batch's items go back to the bulk queue and run once, later; a bulk batch that ends
before the stop lands keeps its results. Driven by events, never by the clock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.engine import preemption
from service.engine.batcher import BatchConfig, Batcher
from service.engine.runner import CPU, OnnxRunner
from service.engine.scaling import batch_config
from service.settings import Settings
from tests.test_batcher import Recorder, items
from tests.test_bulk_priority import bulk


class Stoppable:
    """process(worker, payloads), doubling each payload. A bulk batch (one run with a Stop)
    holds until its stop is requested, then ends with Interrupted, as ONNX Runtime does;
    with `finish_anyway` it sees the stop and still returns its results (the run that ended
    before the stop landed)."""

    def __init__(self, finish_anyway: bool = False) -> None:
        self.finish_anyway = finish_anyway
        self.attempts: list[list[Any]] = []  # every batch taken up
        self.completed: list[list[Any]] = []  # the batches that gave results
        self.entered = threading.Event()  # a bulk batch is holding
        self.stop_landed = threading.Event()
        self.release = threading.Event()  # lets a finish_anyway batch end
        self.hold = False  # set: the next bulk batch holds

    def __call__(self, worker: int, payloads: Sequence[Any]) -> list[Any]:
        self.attempts.append(list(payloads))
        stop = preemption.current()
        if stop is not None and self.hold:
            self.hold = False
            with stop.armed(self.stop_landed.set):
                self.entered.set()
                assert self.stop_landed.wait(10), "the live batch never stopped this one"
                if not self.finish_anyway:
                    raise preemption.Interrupted
                assert self.release.wait(10)
        self.completed.append(list(payloads))
        return [p * 2 for p in payloads]


async def one_worker(process: Stoppable, **config: Any) -> Batcher:
    """A batcher that has run one bulk batch (the payload 0) to the end, so that it knows how
    long bulk batches take; by default it stops any bulk batch (within: 1e9 of its run)."""
    settings: dict[str, Any] = {"max_wait_s": 0, "bulk_stop_within": 1e9, **config}
    batcher = Batcher("m", process, config=BatchConfig(**settings))
    batcher.start()
    assert await bulk(batcher, 0) == [0]
    process.attempts.clear()
    process.completed.clear()
    process.hold = True
    return batcher


async def test_a_live_batch_stops_the_running_bulk_batch_which_runs_again_later() -> None:
    process = Stoppable()
    batcher = await one_worker(process, max_items=4)
    try:
        job = asyncio.create_task(bulk(batcher, 1, 2, 3))
        await asyncio.to_thread(process.entered.wait, 5)
        assert await batcher.submit(lambda: items(7)) == [14]
        assert await job == [2, 4, 6]
    finally:
        await batcher.stop()
    assert batcher.bulk_stopped == 1
    assert process.attempts == [[1, 2, 3], [7], [1, 2, 3]]
    assert process.completed == [[7], [1, 2, 3]]  # every input ran to the end once


async def test_a_bulk_batch_that_ends_before_the_stop_lands_keeps_its_results() -> None:
    process = Stoppable(finish_anyway=True)
    batcher = await one_worker(process, max_items=4)
    try:
        job = asyncio.create_task(bulk(batcher, 1, 2, 3))
        await asyncio.to_thread(process.entered.wait, 5)
        live = asyncio.create_task(batcher.submit(lambda: items(7)))
        await asyncio.to_thread(process.stop_landed.wait, 5)  # requested: the run ends anyway
        process.release.set()
        assert await asyncio.gather(job, live) == [[2, 4, 6], [14]]
    finally:
        await batcher.stop()
    assert batcher.bulk_stopped == 0
    assert process.attempts == process.completed == [[1, 2, 3], [7]]  # nothing ran twice


async def test_without_preemption_a_live_batch_waits_for_the_bulk_batch() -> None:
    recorder = Recorder()
    stops: list[preemption.Stop | None] = []

    def process(worker: int, payloads: Sequence[Any]) -> list[Any]:
        stops.append(preemption.current())
        return recorder(worker, payloads)

    batcher = Batcher("m", process, config=BatchConfig(max_wait_s=0, bulk_preempt=False))
    batcher.start()
    recorder.gate.clear()
    try:
        job = asyncio.create_task(batcher.enqueue(items(1, 2, 3), bulk=True))
        await asyncio.to_thread(recorder.entered.wait, 5)
        live = asyncio.create_task(batcher.enqueue(items(7)))
        await asyncio.sleep(0.02)  # the live batch formed behind it (more time: the same)
        recorder.gate.set()
        assert await asyncio.gather(job, live) == [[2, 4, 6], [14]]
    finally:
        await batcher.stop()
    assert recorder.batches == [[1, 2, 3], [7]] and stops == [None, None]
    assert batcher.bulk_stopped == 0


async def test_nothing_is_stopped_before_a_bulk_batch_has_run_to_the_end() -> None:
    process = Stoppable(finish_anyway=True)
    process.hold = True
    batcher = Batcher("m", process, config=BatchConfig(max_wait_s=0, bulk_stop_within=1e9))
    batcher.start()
    try:
        job = asyncio.create_task(bulk(batcher, 1, 2, 3))
        await asyncio.to_thread(process.entered.wait, 5)
        live = asyncio.create_task(batcher.submit(lambda: items(7)))
        await asyncio.sleep(0.02)  # the live batch formed behind it (more time: the same)
        assert not process.stop_landed.is_set()
        process.release.set()
        process.stop_landed.set()  # let the held batch end
        assert await asyncio.gather(job, live) == [[2, 4, 6], [14]]
    finally:
        await batcher.stop()
    assert process.completed == [[1, 2, 3], [7]] and batcher.bulk_stopped == 0


async def test_a_bulk_batch_past_its_stop_window_runs_to_the_end() -> None:
    process = Stoppable(finish_anyway=True)
    batcher = await one_worker(process, bulk_stop_within=0)
    try:
        job = asyncio.create_task(bulk(batcher, 1, 2, 3))
        await asyncio.to_thread(process.entered.wait, 5)
        live = asyncio.create_task(batcher.submit(lambda: items(7)))
        await asyncio.sleep(0.02)
        assert not process.stop_landed.is_set()
        process.release.set()
        process.stop_landed.set()
        assert await asyncio.gather(job, live) == [[2, 4, 6], [14]]
    finally:
        await batcher.stop()
    assert process.completed == [[1, 2, 3], [7]] and batcher.bulk_stopped == 0


def test_the_stop_window_follows_the_bulk_batches_that_ran() -> None:
    policy = preemption.StopPolicy(within=0.5)
    assert not policy.worth_stopping(100, 0.0)  # nothing known yet
    policy.ran(100, 1.0)  # 0.01 s a token: a batch of 100 is expected to take 1 s
    assert policy.worth_stopping(100, 0.49) and not policy.worth_stopping(100, 0.51)
    policy.ran(100, 2.0)  # the average moves a fifth of the way: 0.012 s a token
    assert policy.seconds_per_token == pytest.approx(0.012)
    assert policy.worth_stopping(100, 0.59) and not policy.worth_stopping(100, 0.61)


async def test_a_stopped_batch_drops_the_inputs_whose_callers_left() -> None:
    process = Stoppable()
    batcher = await one_worker(process, max_items=4)
    try:
        # queued at once (no tokenizing thread), before the loop forms the first batch
        kept = asyncio.create_task(batcher.enqueue(items(1, 2), bulk=True))
        left = asyncio.create_task(batcher.enqueue(items(3), bulk=True))
        await asyncio.to_thread(process.entered.wait, 5)
        assert process.attempts == [[1, 2, 3]]
        left.cancel()
        assert await batcher.submit(lambda: items(7)) == [14]
        assert await kept == [2, 4]
    finally:
        await batcher.stop()
    assert process.completed == [[7], [1, 2]]


def test_a_stop_reaches_the_run_whenever_it_is_requested() -> None:
    calls: list[str] = []
    early = preemption.Stop()
    early.request()
    with early.armed(lambda: calls.append("early")):  # requested before the run: at once
        pass
    late = preemption.Stop()
    with late.armed(lambda: calls.append("late")):
        late.request()
    late.request()  # after the run: nothing left to stop
    assert calls == ["early", "late"]


def test_preemption_is_on_by_default_on_cpu_only() -> None:
    assert batch_config(Settings(), CPU).bulk_preempt
    assert not batch_config(Settings(), "CUDAExecutionProvider").bulk_preempt
    assert not batch_config(Settings(bulk_preempt=False), CPU).bulk_preempt


# --- ONNX Runtime's terminate flag, on real graphs -----------------------------------------
def weight_of(size: int) -> np.ndarray:
    return np.eye(size, dtype=np.float32) * 0.5 + 0.5 / size


def matmul_chain(path: Path, nodes: int, size: int) -> Path:
    """x -> x @ W -> ... (`nodes` MatMuls of size x size): as slow as `nodes` makes it."""
    weight = weight_of(size)
    names = [f"h{i}" for i in range(nodes)] + ["y"]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x" if i == 0 else names[i - 1], "w"], [names[i]])
            for i in range(nodes - 1)
        ]
        + [helper.make_node("MatMul", [names[nodes - 2], "w"], ["y"])],
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, size])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("chains")
    return matmul_chain(directory / "fast.onnx", 3, 8), matmul_chain(
        directory / "slow.onnx", 4000, 256
    )


def runner(path: Path) -> OnnxRunner:
    # no graph optimisation: it could fold the chain's constant products together
    return OnnxRunner(path, provider=CPU, threads=1, optimization="disable")


def test_a_stop_never_requested_changes_nothing(chains: tuple[Path, Path]) -> None:
    session = runner(chains[0])
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    plain = session.run({"x": x})[0]
    with preemption.running(preemption.Stop()):
        stoppable = session.run({"x": x})[0]
    np.testing.assert_array_equal(stoppable, plain)
    np.testing.assert_allclose(plain, x @ np.linalg.matrix_power(weight_of(8), 3), rtol=1e-5)


def test_a_requested_stop_ends_the_run_and_the_session_serves_on(
    chains: tuple[Path, Path],
) -> None:
    session = runner(chains[0])
    x = np.ones((1, 8), dtype=np.float32)
    stop = preemption.Stop()
    stop.request()
    with preemption.running(stop), pytest.raises(preemption.Interrupted):
        session.run({"x": x})
    np.testing.assert_allclose(
        session.run({"x": x})[0], x @ np.linalg.matrix_power(weight_of(8), 3)
    )


def test_a_stop_lands_in_the_middle_of_a_slow_run(chains: tuple[Path, Path]) -> None:
    """4000 MatMuls of 256 x 256 take seconds: the stop, requested once the run is armed,
    ends it at ONNX Runtime's next node."""
    session = runner(chains[1])
    armed = threading.Event()

    class Signalling(preemption.Stop):
        def armed(self, hook: Any) -> Any:
            armed.set()
            return super().armed(hook)

    stop = Signalling()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            with preemption.running(stop):
                session.run({"x": np.ones((256, 256), dtype=np.float32)})
            outcome.append(None)
        except BaseException as error:  # the test reads what ended the run
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    assert armed.wait(30)
    stop.request()
    thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], preemption.Interrupted)

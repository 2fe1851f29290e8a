"""The micro-batcher's promises, checked with recording fake process functions."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from service.engine import formation
from service.engine.batcher import BatchConfig, Batcher
from service.engine.formation import form_batch, full_batch_waiting, padded_cost
from service.errors import InferenceFailed, Overloaded, Unavailable
from service.settings import Settings


class Recorder:
    """process(worker, payloads): doubles each payload, records every batch; can be made to
    block (gate), fail (payload 'boom') or hang once."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, worker: int, payloads: Sequence[Any]) -> list[Any]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(payloads))
        if "boom" in payloads:
            raise RuntimeError("secret internal detail")
        return [p * 2 for p in payloads]


def items(*payloads: Any) -> list[tuple[int, Any]]:
    return [(len(str(p)), p) for p in payloads]


async def started(recorder: Recorder, **config: Any) -> Batcher:
    batcher = Batcher("m", recorder, config=BatchConfig(**config))
    batcher.start()
    return batcher


async def holding(**config: Any) -> tuple[Recorder, Batcher, asyncio.Task[list[Any]]]:
    """A batcher whose first batch (the payload 1) is held running at the recorder's gate."""
    recorder = Recorder()
    batcher = await started(recorder, **config)
    recorder.gate.clear()
    running = asyncio.create_task(batcher.enqueue(items(1)))
    await asyncio.to_thread(recorder.entered.wait, 5)
    return recorder, batcher, running


async def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    recorder = Recorder()
    batcher = await started(recorder, max_items=64, max_wait_s=0.05)
    recorder.gate.clear()  # hold the first batch so the others pile up behind it
    first = asyncio.create_task(batcher.enqueue(items(1000)))
    await asyncio.to_thread(recorder.entered.wait, 5)
    others = [asyncio.create_task(batcher.enqueue(items(i, i + 100))) for i in range(10)]
    await asyncio.sleep(0.05)
    recorder.gate.set()
    results = await asyncio.gather(first, *others)
    assert results[0] == [2000]
    assert results[1:] == [[2 * i, 2 * (i + 100)] for i in range(10)]
    assert len(recorder.batches) == 2  # 21 inputs from 11 requests in 2 inference calls
    await batcher.stop()


async def test_a_big_request_is_split_across_batches_and_reassembled_in_order() -> None:
    recorder = Recorder()
    batcher = await started(recorder, max_items=4)
    payloads = list(range(10, 0, -1))
    assert await batcher.enqueue(items(*payloads)) == [2 * p for p in payloads]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    await batcher.stop()


async def test_a_failing_batch_fails_only_its_requests() -> None:
    recorder = Recorder()
    batcher = await started(recorder)
    with pytest.raises(InferenceFailed) as failure:
        await batcher.enqueue(items("boom", "x"))
    assert "secret" not in failure.value.message and failure.value.status == 500
    assert await batcher.enqueue(items(3)) == [6]
    assert batcher.alive
    await batcher.stop()


async def test_the_next_batch_is_formed_while_the_current_one_runs() -> None:
    recorder, batcher, running = await holding()
    formed = asyncio.create_task(batcher.enqueue(items(2, 3)))
    await asyncio.sleep(0.02)
    assert batcher.depth == 0  # taken out of the queue and waiting in the worker's thread
    queued = asyncio.create_task(batcher.enqueue(items(4)))
    await asyncio.sleep(0.02)
    assert batcher.depth == 1  # one running, one formed: the third waits in the queue
    recorder.gate.set()
    assert await asyncio.gather(running, formed, queued) == [[2], [4, 6], [8]]
    assert recorder.batches == [[1], [2, 3], [4]]
    await batcher.stop()


async def test_a_cancelled_request_costs_no_inference() -> None:
    recorder, batcher, blocker = await holding()
    gone = asyncio.create_task(batcher.enqueue(items(777)))  # formed behind the blocker
    await asyncio.sleep(0.01)
    queued_gone = asyncio.create_task(batcher.enqueue(items(888)))  # still in the queue
    await asyncio.sleep(0.01)
    assert batcher.depth == 1
    gone.cancel()  # what the HTTP layer does when the client disconnects
    queued_gone.cancel()
    await asyncio.sleep(0.01)
    recorder.gate.set()
    assert await blocker == [2]
    assert await batcher.enqueue(items(5)) == [10]
    assert recorder.batches == [[1], [5]]
    await batcher.stop()


async def test_a_full_queue_answers_429_at_once_with_retry_after() -> None:
    recorder, batcher, running = await holding(queue_max_items=3)
    formed = asyncio.create_task(batcher.enqueue(items(2)))  # formed behind the running one
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(batcher.enqueue(items(3, 4)))
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as refused:
        await batcher.enqueue(items(5, 6))
    assert refused.value.status == 429 and int(refused.value.headers["Retry-After"]) >= 1
    recorder.gate.set()
    # nothing accepted is lost
    assert await asyncio.gather(running, formed, waiting) == [[2], [4], [6, 8]]
    await batcher.stop()


async def test_a_request_waiting_past_its_deadline_gets_503() -> None:
    recorder = Recorder()
    batcher = await started(recorder, timeout_s=0.1)
    recorder.gate.clear()
    with pytest.raises(Unavailable) as late:
        await batcher.enqueue(items(1))
    assert late.value.status == 503
    recorder.gate.set()
    await batcher.stop()


async def test_a_hung_batch_is_abandoned_and_the_worker_replaced() -> None:
    recorder = Recorder()
    batcher = await started(recorder, inference_timeout_s=0.2, timeout_s=5)
    recorder.gate.clear()
    with pytest.raises(Unavailable) as hung:
        await batcher.enqueue(items(1))
    assert hung.value.code == "inference_timeout"
    # The stuck thread is still blocked on the gate; a fresh one serves the next batch.
    recorder.gate.set()
    assert await batcher.enqueue(items(4)) == [8]
    await batcher.stop()


async def test_batches_formed_behind_a_hung_one_are_served_by_the_fresh_thread() -> None:
    recorder, batcher, hung = await holding(inference_timeout_s=0.3, timeout_s=5)
    behind = asyncio.create_task(batcher.enqueue(items(7)))
    await asyncio.sleep(0.01)
    assert batcher.depth == 0  # formed behind the hung batch
    with pytest.raises(Unavailable):
        await hung
    recorder.gate.set()  # too late for the abandoned thread's batch, which is not waited for
    assert await behind == [14]
    await batcher.stop()


async def test_no_waiting_for_companions_when_none_are_coming() -> None:
    recorder = Recorder()
    batcher = await started(recorder, max_wait_s=5.0)
    began = time.perf_counter()
    assert await batcher.submit(lambda: items(21)) == [42]
    assert time.perf_counter() - began < 2.5  # it would take 5 s if it waited


async def test_the_loop_restarts_after_an_unexpected_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    batcher = await started(recorder)
    calls = {"n": 0}
    real = Batcher._next_batch

    async def crash_once(self: Batcher) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug")
        return await real(self)

    monkeypatch.setattr(Batcher, "_next_batch", crash_once)
    await asyncio.sleep(0)
    batcher._wakeup.set()  # type: ignore[union-attr]
    await asyncio.sleep(0.01)
    assert batcher.alive
    assert await batcher.enqueue(items(6)) == [12]
    await batcher.stop()


async def test_stop_finishes_running_batches_and_fails_queued_ones_clearly() -> None:
    recorder, batcher, running = await holding()
    formed = asyncio.create_task(batcher.enqueue(items(2)))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(batcher.enqueue(items(3)))
    await asyncio.sleep(0.01)
    threading.Timer(0.05, recorder.gate.set).start()
    await batcher.stop()
    assert await running == [2] and await formed == [4]
    with pytest.raises(Unavailable):
        await queued


# --- batch formation (pure) --------------------------------------------------------------
def test_the_oldest_item_is_always_in_the_next_batch() -> None:
    lengths = [200, 10, 10, 10, 10, 190]
    chosen = form_batch(lengths, max_items=2, max_tokens=10_000, window=100, overhead_tokens=16)
    assert 0 in chosen and chosen == [5, 0]  # its closest companion in length
    # a call costing 8 tokens does not pay for 10 tokens of padding: the oldest goes alone
    assert form_batch(lengths, max_items=2, max_tokens=10_000, window=100) == [0]


def test_batches_group_similar_lengths() -> None:
    lengths = [50, 5, 49, 6, 51, 7, 48]
    chosen = form_batch(lengths, max_items=4, max_tokens=10_000, window=100)
    assert sorted(lengths[i] for i in chosen) == [48, 49, 50, 51]


def test_the_token_budget_counts_padded_length() -> None:
    lengths = [10, 10, 10, 100, 10]
    chosen = form_batch(lengths, max_items=10, max_tokens=40, window=100)
    assert sorted(chosen) == [0, 1, 2, 4]  # 4 x 10 = 40 fits; the 100 would pad to 500
    assert 0 in form_batch([500, 1], max_items=10, max_tokens=40, window=100)


def test_the_window_limits_what_is_considered() -> None:
    lengths = [10, 90, 90, 90, 10]
    chosen = form_batch(lengths, max_items=2, max_tokens=10_000, window=4)
    assert 4 not in chosen and 0 in chosen


def test_full_batch_detection() -> None:
    assert full_batch_waiting([1] * 32, max_items=32, max_tokens=10_000)
    assert full_batch_waiting([5000, 5000], max_items=32, max_tokens=8192)
    assert not full_batch_waiting([10, 10], max_items=32, max_tokens=8192)


def test_a_much_longer_item_waits_for_companions_of_its_own_length() -> None:
    """On CPU padding is the cost: 20-token items are not padded to 200 for one passenger."""
    lengths = [20, 20, 21, 200, 19]
    chosen = form_batch(lengths, max_items=32, max_tokens=10_000, window=100, overhead_tokens=64)
    assert sorted(chosen) == [0, 1, 2, 4]


def test_the_service_setting_and_the_batcher_share_one_default_overhead() -> None:
    assert BatchConfig().overhead_tokens == formation.OVERHEAD_TOKENS == 8.0
    assert Settings().batch_overhead_tokens == formation.OVERHEAD_TOKENS


def test_a_large_call_overhead_makes_batches_as_big_as_allowed() -> None:
    """On GPU batch size is the lever: with a large overhead everything waiting goes in."""
    lengths = [20, 20, 21, 200, 19]
    chosen = form_batch(lengths, max_items=32, max_tokens=10_000, window=100, overhead_tokens=1e6)
    assert sorted(chosen) == [0, 1, 2, 3, 4]


def test_formation_picks_the_most_efficient_run_around_the_oldest() -> None:
    lengths = [50, 10, 52, 11, 48, 12, 200]
    chosen = form_batch(lengths, max_items=32, max_tokens=10_000, window=100, overhead_tokens=64)
    useful = sum(lengths[i] for i in chosen)
    cost = 64 + len(chosen) * max(lengths[i] for i in chosen)
    # every other contiguous run (in length order) containing the oldest is no better
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    pos = order.index(0)
    for lo in range(pos + 1):
        for hi in range(pos, len(order)):
            run = order[lo : hi + 1]
            other = sum(lengths[i] for i in run) / (64 + len(run) * max(lengths[i] for i in run))
            assert other <= useful / cost + 1e-12
    assert 0 in chosen


def run_score(lengths: list[int], overhead: float, run: list[int]) -> float:
    return sum(lengths[i] for i in run) / (overhead + padded_cost([lengths[i] for i in run]))


@pytest.mark.parametrize(
    ("python_window", "pairs"),
    [(1024, 0), (0, 0), (0, formation.EXHAUSTIVE_PAIRS)],
    ids=["python", "numpy-search", "numpy-scored"],
)
def test_formation_matches_an_exhaustive_search_under_both_caps(
    python_window: int, pairs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random queues, caps and overheads: the chosen run is within the caps, holds the
    oldest, and no run that contains the oldest and fits the caps is more efficient (in
    Python, and with numpy by the binary search and by scoring every pair)."""
    monkeypatch.setattr(formation, "PYTHON_WINDOW", python_window)
    monkeypatch.setattr(formation, "EXHAUSTIVE_PAIRS", pairs)
    rng = random.Random(7)
    for _ in range(400):
        lengths = [rng.choice([rng.randint(1, 8), rng.randint(1, 300)]) for _ in range(40)]
        max_items, window = rng.randint(1, 40), rng.randint(1, 45)
        max_tokens, overhead = rng.randint(1, 3000), rng.choice([0.0, 16.0, 500.0, 1e6])
        chosen = form_batch(lengths, max_items, max_tokens, window, overhead)
        score = functools.partial(run_score, lengths, overhead)
        considered = lengths[:window]
        assert 0 in chosen and len(chosen) <= max_items and max(chosen) < len(considered)
        assert len(chosen) == 1 or padded_cost([lengths[i] for i in chosen]) <= max_tokens
        order = sorted(range(len(considered)), key=lambda i: (considered[i], i))
        pos = order.index(0)
        for lo in range(pos + 1):
            for hi in range(pos, len(order)):
                run = order[lo : hi + 1]
                fits = padded_cost([lengths[i] for i in run]) <= max_tokens or len(run) == 1
                if len(run) <= max_items and fits:
                    assert score(run) <= score(chosen) + 1e-12


def test_python_and_numpy_formation_choose_the_same_batch() -> None:
    """The two implementations of one rule (Python for small windows, numpy for large) give
    the same indices, ties included: repeated lengths, empty items, no overhead, lone items
    over the budget, windows on both sides of the switch."""
    rng = random.Random(11)
    for _ in range(3000):
        size = rng.choice([1, 2, 5, 20, 64, 65, 200])
        lengths = [
            rng.choice([0, 7, 7, 50, rng.randint(1, 40), rng.randint(1, 600)]) for _ in range(size)
        ]
        max_items = rng.choice([1, 2, 4, 8, 32, 256])
        max_tokens = rng.choice([1, 64, 512, 8192, 10**6])
        overhead = rng.choice([0.0, 4.0, 8.0, 64.0, 16384.0])
        python = formation._form_python(lengths, max_items, max_tokens, overhead)
        numpy = formation._form_numpy(lengths, max_items, max_tokens, overhead)
        assert python == numpy, (lengths, max_items, max_tokens, overhead)
    assert form_batch([0, 0, 0], max_items=8, max_tokens=100, window=10, overhead_tokens=0) == [
        0,
        1,
        2,
    ]


class Cores:
    """process(worker, payloads) for a solo batcher: records which workers ran each batch and
    which ran at the same time; worker 0 must never run beside another."""

    def __init__(self, hold_s: float = 0.02) -> None:
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.running: set[int] = set()
        self.overlaps: list[frozenset[int]] = []
        self.workers: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, worker: int, payloads: Sequence[Any]) -> list[Any]:
        with self.lock:
            self.running.add(worker)
            self.overlaps.append(frozenset(self.running))
            self.workers.append(worker)
        self.entered.set()
        self.gate.wait(10)
        time.sleep(self.hold_s)
        with self.lock:
            self.running.discard(worker)
        return [p * 2 for p in payloads]


async def solo_batcher(cores: Cores, **config: Any) -> Batcher:
    batcher = Batcher("m", cores, workers=3, solo=True, config=BatchConfig(**config))
    batcher.start()
    return batcher


async def test_solo_a_lone_request_runs_on_the_wide_worker() -> None:
    cores = Cores(hold_s=0)
    batcher = await solo_batcher(cores)
    try:
        for n in range(3):  # one at a time: each has nothing behind it
            assert await batcher.enqueue(items(n, n + 10)) == [2 * n, 2 * n + 20]
    finally:
        await batcher.stop()
    assert cores.workers == [0, 0, 0] and batcher.solo_batches == 3


async def test_solo_under_load_the_narrow_workers_run_side_by_side_never_beside_the_wide() -> None:
    cores = Cores()
    batcher = await solo_batcher(cores, max_items=2, max_wait_s=0)
    try:
        results = await asyncio.gather(*(batcher.enqueue(items(n)) for n in range(24)))
        assert results == [[2 * n] for n in range(24)]
        # Load is gone: the next lone request gets the wide worker again.
        assert await batcher.enqueue(items(100)) == [200]
    finally:
        await batcher.stop()
    assert set(cores.workers[:-1]) == {1, 2} and cores.workers[-1] == 0
    assert frozenset({1, 2}) in cores.overlaps  # the two narrow sessions really overlapped
    assert all(len(running) == 1 for running in cores.overlaps if 0 in running)
    assert len(cores.workers) < 24  # still batched


async def test_solo_requests_arriving_while_the_wide_worker_runs_wait_for_it() -> None:
    cores = Cores(hold_s=0)
    batcher = await solo_batcher(cores, max_items=1, max_wait_s=0)
    cores.gate.clear()
    try:
        first = asyncio.create_task(batcher.enqueue(items(1)))
        await asyncio.to_thread(cores.entered.wait, 5)
        later = [asyncio.create_task(batcher.enqueue(items(n))) for n in (2, 3, 4)]
        await asyncio.sleep(0.05)
        assert cores.workers == [0]  # nothing started beside the wide worker
        cores.gate.set()
        assert await first == [2]
        assert [await task for task in later] == [[4], [6], [8]]
    finally:
        await batcher.stop()
    assert all(len(running) == 1 for running in cores.overlaps if 0 in running)
    assert 0 not in cores.workers[1:3]  # the two waiting behind others went to narrow workers


async def test_without_solo_every_worker_takes_batches() -> None:
    cores = Cores(hold_s=0)
    batcher = Batcher("m", cores, workers=3, config=BatchConfig(max_items=1, max_wait_s=0))
    batcher.start()
    try:
        await asyncio.gather(*(batcher.enqueue(items(n)) for n in range(12)))
    finally:
        await batcher.stop()
    assert set(cores.workers) == {0, 1, 2} and batcher.solo_batches == 0

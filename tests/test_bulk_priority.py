"""The batcher's bulk priority class: bulk work runs only when no live item waits, a live
batch takes the place of a bulk batch formed behind a running one, and bulk batches keep to
their own token budget."""

from __future__ import annotations

import asyncio
from typing import Any

from service.engine.batcher import BatchConfig, Batcher
from service.engine.priority import BULK
from service.engine.scaling import batch_config
from service.settings import Settings
from tests.test_batcher import Cores, Recorder, items, solo_batcher, started


async def bulk(batcher: Batcher, *payloads: Any) -> list[Any]:
    token = BULK.set(True)
    try:
        return await batcher.submit(lambda: items(*payloads))
    finally:
        BULK.reset(token)


async def test_live_items_go_before_bulk_items_queued_earlier() -> None:
    recorder = Recorder()
    batcher = await started(recorder, max_items=2, max_wait_s=0)
    recorder.gate.clear()
    try:
        running = asyncio.create_task(bulk(batcher, 1, 2))  # holds the worker
        await asyncio.to_thread(recorder.entered.wait, 5)
        waiting = asyncio.create_task(bulk(batcher, 3, 4, 5, 6))
        await asyncio.sleep(0.02)
        assert batcher.bulk_depth == 2  # [3, 4] formed behind the running batch
        live = asyncio.create_task(batcher.submit(lambda: items(7)))
        await asyncio.sleep(0.02)
        assert batcher.bulk_depth == 4  # pulled back: [7] took its place
        recorder.gate.set()
        assert await asyncio.gather(running, waiting, live) == [[2, 4], [6, 8, 10, 12], [14]]
    finally:
        await batcher.stop()
    assert recorder.batches == [[1, 2], [7], [3, 4], [5, 6]]


async def test_a_live_batch_takes_the_place_of_a_bulk_batch_that_has_not_started() -> None:
    recorder = Recorder()
    batcher = await started(recorder, max_items=1, max_wait_s=0)
    recorder.gate.clear()
    try:
        running = asyncio.create_task(bulk(batcher, 1))
        await asyncio.to_thread(recorder.entered.wait, 5)
        queued_bulk = asyncio.create_task(bulk(batcher, 2))
        await asyncio.sleep(0.02)
        assert batcher.bulk_depth == 0  # formed behind the running batch: no gap between
        live = asyncio.create_task(batcher.submit(lambda: items(3)))
        await asyncio.sleep(0.02)
        assert batcher.depth == 0 and batcher.bulk_depth == 1  # pulled back for the live one
        recorder.gate.set()
        assert await asyncio.gather(running, queued_bulk, live) == [[2], [4], [6]]
        assert await bulk(batcher, 4) == [8]  # the worker goes on serving
    finally:
        await batcher.stop()
    assert recorder.batches == [[1], [3], [2], [4]]  # the pulled batch never ran twice


async def test_bulk_batches_keep_to_their_token_budget() -> None:
    recorder = Recorder()
    batcher = await started(recorder, max_items=32, max_tokens=64, bulk_max_tokens=8)
    try:
        assert await bulk(batcher, *range(10, 18)) == [2 * n for n in range(10, 18)]
    finally:
        await batcher.stop()
    assert [len(batch) for batch in recorder.batches] == [4, 4]  # 4 items of 2 tokens


async def test_bulk_batches_take_the_smaller_budget_while_live_work_comes() -> None:
    recorder = Recorder()
    config = {"max_items": 32, "bulk_max_tokens": 8, "bulk_live_max_tokens": 4}
    batcher = await started(recorder, **config, live_recent_s=3600)  # live: recent for an hour
    quiet = await started(recorder, **config, live_recent_s=0)  # live: never recent
    try:
        for each in (batcher, quiet):
            assert await each.submit(lambda: items(7)) == [14]
            assert await bulk(each, *range(10, 18)) == [2 * n for n in range(10, 18)]
    finally:
        await batcher.stop()
        await quiet.stop()
    assert [len(batch) for batch in recorder.batches] == [1, 2, 2, 2, 2, 1, 4, 4]


async def test_solo_bulk_runs_on_the_narrow_workers_side_by_side() -> None:
    cores = Cores()
    batcher = await solo_batcher(cores, max_items=2, max_wait_s=0)
    try:
        assert await bulk(batcher, *range(12)) == [2 * n for n in range(12)]
    finally:
        await batcher.stop()
    assert set(cores.workers) == {1, 2}
    assert frozenset({1, 2}) in cores.overlaps


async def test_a_full_bulk_queue_refuses_bulk_but_not_live_requests() -> None:
    recorder = Recorder()
    batcher = await started(recorder, max_items=1, queue_max_items=2)
    recorder.gate.clear()
    try:
        running = asyncio.create_task(batcher.submit(lambda: items(1)))
        await asyncio.to_thread(recorder.entered.wait, 5)
        waiting = asyncio.create_task(bulk(batcher, 2, 3))  # [2] formed, [3] queued
        await asyncio.sleep(0.02)
        refused = await asyncio.gather(bulk(batcher, 4, 5), return_exceptions=True)
        assert type(refused[0]).__name__ == "Overloaded"
        live = asyncio.create_task(batcher.submit(lambda: items(6, 7)))
        await asyncio.sleep(0.02)
        recorder.gate.set()
        assert await asyncio.gather(running, waiting, live) == [[2], [4, 6], [12, 14]]
    finally:
        await batcher.stop()


def test_the_bulk_budgets_apply_on_cpu_only() -> None:
    settings = Settings(bulk_max_batch_tokens=1000, bulk_live_max_batch_tokens=100)
    cpu = batch_config(settings, "CPUExecutionProvider")
    assert (cpu.bulk_max_tokens, cpu.bulk_live_max_tokens) == (1000, 100)
    cuda = batch_config(settings, "CUDAExecutionProvider")
    assert cuda.bulk_max_tokens is None and cuda.bulk_live_max_tokens is None
    assert BatchConfig().bulk_max_tokens is None and BatchConfig().bulk_live_max_tokens is None

"""The dynamic micro-batcher: one per model, merging concurrent requests into inference batches.

A request's inputs are prepared (tokenized) off the event loop, then queued as items with
their token lengths. One asyncio loop per model forms length-sorted batches around the oldest
item and hands each to a worker (one per session, each with its own thread). A worker takes
``pipeline_depth`` batches: the next one is formed and waiting in the worker's thread while
the current one runs, so the session never idles on a round trip through the event loop.
With ``solo`` (adaptive sessions, docs/scaling.md), worker 0 is a session on all the cores
and the others are single-thread sessions that together use the same cores: a batch with
nothing behind it (no item waiting, no request being tokenized, every worker idle) runs on
worker 0 alone, for latency; otherwise batches go to the others in parallel, and worker 0
never runs beside them. Results resolve each item's future. Failures fail that batch only;
a request whose caller has gone (its task cancelled) is dropped before it costs inference,
even from a batch already formed; the queue is bounded (429) and a request waits at most
``request_timeout_s`` (503).

Two priority classes: live requests, and bulk work (batch jobs, service/engine/priority.py)
in a queue of its own. A bulk batch is formed only when no live item waits, within
``bulk_max_tokens``. It is pipelined like any batch (formed while the one before it runs),
but a live batch takes its place: a bulk batch formed and not yet started is pulled back to
the bulk queue when a live batch is dispatched to its worker. The bulk batch already running
there is stopped (``bulk_preempt``, service/engine/preemption.py: ONNX Runtime ends the run
at its next node) and its items go back to the front of the bulk queue; a run that ends
before the stop lands keeps its results. So a live request waits for bulk work only as long
as a stop takes to land (without preemption: for the running bulk batch, which
``bulk_max_tokens`` keeps short). With solo, bulk batches run on the single-thread sessions
side by side (throughput), never on worker 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.engine import preemption
from service.engine.formation import OVERHEAD_TOKENS, form_batch, full_batch_waiting, padded_cost
from service.engine.priority import is_bulk
from service.errors import InferenceFailed, Overloaded, ServiceError, Unavailable, timed_out
from service.ops import timing

log = logging.getLogger(__name__)

# Runs one batch on worker `index`: payloads in, one result per payload out.
ProcessFn = Callable[[int, Sequence[Any]], Sequence[Any]]


@dataclass(frozen=True)
class BatchConfig:
    max_items: int = 32
    max_tokens: int = 8192
    max_wait_s: float = 0.002
    queue_max_items: int = 4096
    timeout_s: float = 30.0
    window: int = 1024
    inference_timeout_s: float = 60.0
    overhead_tokens: float = OVERHEAD_TOKENS
    pipeline_depth: int = 2  # batches handed to one worker at a time: running + formed
    bulk_max_tokens: int | None = None  # a bulk batch's token budget (None: max_tokens)
    bulk_preempt: bool = True  # a live batch stops the bulk batch running on its worker
    bulk_stop_within: float = 0.5  # ... in this first part of its expected run only
    # a bulk batch's budget while live work comes (a live batch in the last live_recent_s)
    bulk_live_max_tokens: int | None = None
    live_recent_s: float = 1.0


class BatchObserver(Protocol):
    def tokenized(self, seconds: float) -> None: ...
    def batch_done(self, size: int, tokens: int, seconds: float) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def queue_depth(self, depth: int) -> None: ...
    def rejected(self, reason: str) -> None: ...
    def solo_batch(self) -> None: ...


class NullObserver:
    def tokenized(self, seconds: float) -> None:
        pass

    def batch_done(self, size: int, tokens: int, seconds: float) -> None:
        pass

    def waited(self, seconds: float) -> None:
        pass

    def queue_depth(self, depth: int) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def solo_batch(self) -> None:
        pass


@dataclass(eq=False, slots=True)
class _Request:
    """One caller's inputs: one future for all of them, resolved when the last is done (a
    future per input costs the event loop a callback per input)."""

    future: asyncio.Future[list[Any]]
    results: list[Any]
    remaining: int
    items: list[_Item] = field(default_factory=list)

    def deliver(self, index: int, result: Any) -> None:
        if self.future.done():
            return
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            self.future.set_result(self.results)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(eq=False, slots=True)
class _Item:
    length: int
    payload: Any
    request: _Request
    index: int  # its place among the request's inputs
    enqueued: float
    started: float = 0.0  # when its batch started running
    bulk: bool = False  # queued in the bulk priority class

    @property
    def gone(self) -> bool:
        """Its request has its answer already: cancelled (the caller went), or failed."""
        return self.request.future.done()


@dataclass(eq=False)
class _Dispatch:
    """A batch handed to a worker: running, or formed and waiting behind the running one."""

    worker: int
    batch: list[_Item]
    future: asyncio.Future[tuple[list[_Item], Sequence[Any], float]] | None = None
    watchdog: asyncio.TimerHandle | None = None
    bulk: bool = False
    stop: preemption.Stop | None = None  # a bulk batch that a live batch may stop
    started: bool = False  # its thread has taken it up
    began: float = 0.0  # when it started running (stamped in its thread)
    pulled: bool = False  # given back to the bulk queue before it started
    _state: threading.Lock = field(default_factory=threading.Lock)

    def pull(self) -> bool:
        """On the loop: take back a bulk batch that has not started; False if it has."""
        with self._state:
            if self.started:
                return False
            self.pulled = True
            return True

    def start(self) -> bool:
        """In the worker's thread: False if the batch was pulled back meanwhile."""
        with self._state:
            if self.pulled:
                return False
            self.started = True
            return True

    @property
    def pullable(self) -> bool:
        return self.bulk and not self.started

    @property
    def tokens(self) -> int:
        return padded_cost([item.length for item in self.batch])


def request_timings(request: _Request) -> tuple[float, float]:
    """A finished request's queue wait (until its last batch started) and inference (from its
    first batch's start until now), for the response's timing headers."""
    items = request.items
    first = min(item.started for item in items)
    wait = max(item.started for item in items) - items[0].enqueued
    return wait, time.perf_counter() - first


class Batcher:
    def __init__(
        self,
        name: str,
        process: ProcessFn,
        *,
        workers: int = 1,
        solo: bool = False,
        config: BatchConfig | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self.config = config or BatchConfig()
        self._process = process
        self._observer = observer or NullObserver()
        self._workers = workers
        self._solo = solo and workers > 1
        self._queue: deque[_Item] = deque()
        self._bulk: deque[_Item] = deque()  # the bulk priority class: runs when _queue is empty
        self._preparing = 0  # requests accepted and being tokenized: companions on their way
        self._gone_waiting = False  # some queued items' callers have gone: drop them
        self._wakeup: asyncio.Event | None = None
        self._slot_freed: asyncio.Event | None = None
        # One thread per worker, so a batch that hangs can be abandoned with its thread.
        self._executors: list[ThreadPoolExecutor] = []
        self._dispatched: list[list[_Dispatch]] = [[] for _ in range(workers)]
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self.batches_run = 0
        self.solo_batches = 0  # batches that ran on worker 0 alone (with solo)
        self.bulk_stopped = 0  # bulk batches stopped for a live batch, their items requeued
        self._last_live = -math.inf  # when the last live batch was dispatched
        self._stops = preemption.StopPolicy(self.config.bulk_stop_within)

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._executors = [self._new_executor(i) for i in range(self._workers)]
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"batcher-{self.name}"
        )
        self._task.add_done_callback(self._loop_ended)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.remove_done_callback(self._loop_ended)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        for item in [*self._queue, *self._bulk]:
            item.request.fail(Unavailable("the service is shutting down"))
        self._queue.clear()
        self._bulk.clear()
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)

    def _new_executor(self, worker: int) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(1, thread_name_prefix=f"infer-{self.name}-{worker}")

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """The loop must never end on its own; if it does, log why and start it again."""
        if task.cancelled():
            return
        log.error("batcher loop of %s ended: %r; restarting", self.name, task.exception())
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"batcher-{self.name}"
        )
        self._task.add_done_callback(self._loop_ended)

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def bulk_depth(self) -> int:
        return len(self._bulk)

    # --- the request side --------------------------------------------------------------
    async def submit(self, prepare: Callable[[], Sequence[tuple[int, Any]]]) -> list[Any]:
        """Prepare a request's items in a thread, queue them, and wait for their results.

        ``prepare`` returns (token length, payload) per input. Raises Overloaded (429) when
        the queue is full, Unavailable (503) past the timeout; cancelling the caller drops
        its items that have not run yet. Bulk work (``priority.BULK`` set) goes to the bulk
        queue.
        """
        bulk = is_bulk()
        self._preparing += not bulk  # bulk companions are no reason to hold a live batch
        try:
            items = await timing.prepared(prepare, self._observer.tokenized)
        finally:
            self._preparing -= not bulk
        return await self.enqueue(items, bulk=bulk)

    async def enqueue(self, items: Sequence[tuple[int, Any]], *, bulk: bool = False) -> list[Any]:
        """Queue prepared items and wait for their results (at most ``timeout_s``)."""
        if not items:
            return []
        request = self.accept(items, bulk=bulk)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                results = await request.future
            wait, inference = self.finished(request)
            timing.add("queue", wait)
            timing.add("inference", inference)
            return results
        except TimeoutError:
            self._observer.rejected("timeout")
            raise timed_out(self.name, self.config.timeout_s) from None
        finally:
            self.forget(request)

    def accept(self, items: Sequence[tuple[int, Any]], *, bulk: bool = False) -> _Request:
        """Queue a request's prepared items at once (no waiting): its future resolves to one
        result per item. Raises Overloaded (429) when the queue (live or bulk, each bounded
        by queue_max_items) is full. The engine process calls this for the requests other
        processes send it."""
        queue = self._bulk if bulk else self._queue
        if len(queue) + len(items) > self.config.queue_max_items:
            self._observer.rejected("queue_full")
            raise Overloaded(
                f"model {self.name!r} has {len(queue)} inputs waiting; try again shortly",
                headers={"Retry-After": str(self._retry_after())},
            )
        loop = asyncio.get_running_loop()
        request = _Request(loop.create_future(), [None] * len(items), len(items))
        now = time.perf_counter()
        request.items = [
            _Item(length, payload, request, index, now, bulk=bulk)
            for index, (length, payload) in enumerate(items)
        ]
        queue.extend(request.items)
        self._observer.queue_depth(len(self._queue))
        assert self._wakeup is not None, "batcher not started"
        self._wakeup.set()
        return request

    def finished(self, request: _Request) -> tuple[float, float]:
        """A request answered: observe its queue wait; its (wait, inference) seconds."""
        wait, inference = request_timings(request)
        self._observer.waited(wait)
        return wait, inference

    def forget(self, request: _Request) -> None:
        """The caller no longer waits (answered, gone or timed out): a request still pending
        is cancelled, and its items are dropped before they cost inference."""
        if not request.future.done():
            request.future.cancel()
            self._gone_waiting = True
        elif not request.future.cancelled():
            request.future.exception()  # mark a batch failure as seen

    def _retry_after(self) -> int:
        return max(1, math.ceil(len(self._queue) / max(self.config.max_items, 1) * 0.05))

    # --- the loop ----------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await self._free_slot()
            batch, worker = await self._next_batch()
            if worker is None:
                self._dispatch(self._choose_worker(), batch)
            else:
                self._dispatch(worker, batch, bulk=True)

    def _loads(self, live: bool = True) -> list[int]:
        """Batches dispatched to each worker; for a live batch, bulk batches that have not
        started do not count (the live batch takes their place)."""
        return [
            sum(1 for d in dispatched if not (live and d.pullable))
            for dispatched in self._dispatched
        ]

    def _open_workers(self, live: bool = True) -> list[int]:
        """Workers that take another batch now: those with fewer than pipeline_depth. With
        solo, none while worker 0 runs, and worker 0 only when all are idle."""
        depth = max(1, self.config.pipeline_depth)
        loads = self._loads(live)
        if not self._solo:
            return [worker for worker, load in enumerate(loads) if load < depth]
        if loads[0]:
            return []
        return [worker for worker in range(1, len(loads)) if loads[worker] < depth]

    def _choose_worker(self) -> int:
        """The least loaded open worker; with solo, worker 0 for a batch with nothing behind
        it (called after the batch has left the queue)."""
        loads = self._loads()
        if self._solo and not any(loads) and not self._queue and self._preparing == 0:
            self.solo_batches += 1
            self._observer.solo_batch()
            return 0
        # equally loaded: one whose bulk batch a stop ends now (the youngest: the least work
        # lost), else the one whose running batch started first (likely done first)
        now = time.perf_counter()

        def rank(worker: int) -> tuple[int, bool, float]:
            since = self._running_since(worker)
            stoppable = self._stoppable(worker, now) is not None
            return loads[worker], not stoppable, -since if stoppable else since

        return min(self._open_workers(), key=rank)

    def _stoppable(self, worker: int, now: float) -> preemption.Stop | None:
        """The Stop of the bulk batch running on `worker` that a live batch would stop now,
        if any."""
        for running in self._dispatched[worker]:
            stop = running.stop
            if stop is None or stop.requested or not running.began:
                continue
            if self._stops.worth_stopping(running.tokens, now - running.began):
                return stop
        return None

    def _running_since(self, worker: int) -> float:
        """When the batch running on `worker` started (0: none runs)."""
        return min((d.began for d in self._dispatched[worker] if d.began), default=0.0)

    async def _free_slot(self) -> None:
        """Wait until some worker takes another batch (it is idle, or runs only one)."""
        assert self._slot_freed is not None
        while not self._open_workers():
            self._slot_freed.clear()
            await self._slot_freed.wait()

    def _bulk_worker(self) -> int | None:
        """The least loaded open worker for a bulk batch (with solo: a single-thread one),
        or None."""
        loads = self._loads(live=False)
        open_ = [w for w in self._open_workers(live=False) if not (self._solo and w == 0)]
        return min(open_, key=lambda worker: loads[worker]) if open_ else None

    async def _next_batch(self) -> tuple[list[_Item], int | None]:
        """The next batch, and its worker when it is a bulk batch (else None: any open)."""
        assert self._wakeup is not None
        config = self.config
        while True:
            self._drop_cancelled()
            if not self._queue:
                worker = self._bulk_worker() if self._bulk else None
                if worker is not None:
                    return self._take(self._bulk, self._bulk_budget()), worker
                self._wakeup.clear()  # set by a new item, and by a worker coming free
                await self._wakeup.wait()
                continue
            if (
                self._preparing == 0
                or len(self._queue) >= config.max_items
                or full_batch_waiting(
                    [item.length for item in self._queue], config.max_items, config.max_tokens
                )
            ):
                break  # nobody else is coming, or waiting would not grow the batch
            remaining = self._queue[0].enqueued + config.max_wait_s - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                break
        return self._take(self._queue, config.max_tokens), None

    def _bulk_budget(self) -> int:
        """A bulk batch's token budget: smaller while live batches come, so that a live
        batch waits for (or stops, wasting) less bulk work."""
        config = self.config
        budget = min(config.bulk_max_tokens or config.max_tokens, config.max_tokens)
        live_recently = time.perf_counter() - self._last_live < config.live_recent_s
        if live_recently and config.bulk_live_max_tokens is not None:
            return min(budget, config.bulk_live_max_tokens)
        return budget

    def _take(self, queue: deque[_Item], max_tokens: int) -> list[_Item]:
        """Form a batch from `queue` and take its items out."""
        config = self.config
        # Only the window is taken out and put back, not the whole queue copied (a deep queue:
        # 64 clients of 32 texts hold 2,000 items); choosing from the window is what costs.
        waiting = [queue.popleft() for _ in range(min(config.window, len(queue)))]
        chosen = form_batch(
            [item.length for item in waiting],
            config.max_items,
            max_tokens,
            config.window,
            config.overhead_tokens,
        )
        picked = set(chosen)
        batch = [waiting[i] for i in chosen]
        queue.extendleft(reversed([item for i, item in enumerate(waiting) if i not in picked]))
        self._observer.queue_depth(len(self._queue))
        return batch

    def _drop_cancelled(self) -> None:
        if self._gone_waiting:
            self._gone_waiting = False
            self._queue = deque(item for item in self._queue if not item.gone)
            self._bulk = deque(item for item in self._bulk if not item.gone)

    def _pull_back(self, worker: int) -> None:
        """A live batch goes to `worker`: the bulk batches waiting there go back to the
        bulk queue (their thread skips them)."""
        for waiting in [d for d in self._dispatched[worker] if d.pullable]:
            if waiting.pull():
                self._dispatched[worker].remove(waiting)
                self._bulk.extendleft(reversed(waiting.batch))

    def _stop_bulk(self, worker: int) -> None:
        """A live batch goes to `worker`: stop the bulk batch running there if it is early in
        its run (its items come back through _requeue; if it ends first, its results stand)."""
        stop = self._stoppable(worker, time.perf_counter())
        if stop is not None:
            stop.request()

    def _requeue(self, dispatch: _Dispatch) -> None:
        """A stopped bulk batch: its items (those still wanted) back to the bulk queue's front."""
        self.bulk_stopped += 1
        self._bulk.extendleft(reversed([item for item in dispatch.batch if not item.gone]))

    def _dispatch(self, worker: int, batch: list[_Item], bulk: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if not bulk:
            self._last_live = time.perf_counter()
            self._pull_back(worker)
            if self.config.bulk_preempt:
                self._stop_bulk(worker)
        stop = preemption.Stop() if bulk and self.config.bulk_preempt else None
        dispatch = _Dispatch(worker, batch, bulk=bulk, stop=stop)
        future = loop.run_in_executor(self._executors[worker], self._run, loop, dispatch)
        dispatch.future = future
        self._dispatched[worker].append(dispatch)
        self._inflight.add(future)

        def finished(done: asyncio.Future[tuple[list[_Item], Sequence[Any], float]]) -> None:
            self._inflight.discard(done)
            if done.cancelled():  # abandoned (or pulled back) by the watchdog, which freed it
                return
            if dispatch.watchdog is not None:
                dispatch.watchdog.cancel()
            error = done.exception()
            if isinstance(error, preemption.Interrupted):
                self._requeue(dispatch)  # before the release, which wakes the loop for it
            self._release(dispatch)
            self.batches_run += 1
            if isinstance(error, preemption.Interrupted):
                return
            if error is not None:
                self._fail(batch, error)
                return
            live, results, seconds = done.result()
            if not live:
                return
            tokens = padded_cost([item.length for item in live])
            if dispatch.stop is not None:
                self._stops.ran(tokens, seconds)
            self._observer.batch_done(len(live), tokens, seconds)
            for item, result in zip(live, results, strict=True):
                item.request.deliver(item.index, result)

        future.add_done_callback(finished)

    def _release(self, dispatch: _Dispatch) -> None:
        dispatched = self._dispatched[dispatch.worker]
        if dispatch in dispatched:
            dispatched.remove(dispatch)
        assert self._slot_freed is not None and self._wakeup is not None
        self._slot_freed.set()
        if self._bulk:
            self._wakeup.set()  # an idle worker may take a bulk batch now

    def _began(self, dispatch: _Dispatch, live: list[_Item], now: float) -> None:
        """On the loop, when a batch has started running in its thread at `now` (stamped there:
        the loop may get here later, and a stamp taken here made inference look shorter than
        the session ran): stamp its items, arm the watchdog."""
        dispatch.began = now
        for item in live:
            item.started = now
        if dispatch.future is not None and not dispatch.future.done():
            dispatch.watchdog = asyncio.get_running_loop().call_later(
                self.config.inference_timeout_s, self._abandon, dispatch
            )

    def _abandon(self, dispatch: _Dispatch) -> None:
        """A batch ran past inference_timeout_s: fail its requests with 503, leave its thread
        behind, and give the worker a fresh thread so the model keeps serving. Batches formed
        behind it go back to the front of the queue: nothing accepted is lost."""
        worker = dispatch.worker
        log.error(
            "batch of %d on %s hung for %.0fs; abandoning its thread",
            len(dispatch.batch),
            self.name,
            self.config.inference_timeout_s,
        )
        self._observer.rejected("inference_timeout")
        self._fail(
            dispatch.batch,
            Unavailable(
                f"inference on {self.name!r} did not finish in "
                f"{self.config.inference_timeout_s:g}s",
                code="inference_timeout",
            ),
        )
        behind = [d for d in self._dispatched[worker] if d is not dispatch]
        self._dispatched[worker] = []
        for waiting in [dispatch, *behind]:
            if waiting.future is not None:
                waiting.future.cancel()
                self._inflight.discard(waiting.future)
        returned = [item for d in behind for item in d.batch if not item.gone]
        self._queue.extendleft(reversed([item for item in returned if not item.bulk]))
        self._bulk.extendleft(reversed([item for item in returned if item.bulk]))
        self._observer.queue_depth(len(self._queue))
        self._executors[worker].shutdown(wait=False, cancel_futures=True)
        self._executors[worker] = self._new_executor(worker)
        assert self._slot_freed is not None and self._wakeup is not None
        self._slot_freed.set()
        self._wakeup.set()

    def _run(
        self, loop: asyncio.AbstractEventLoop, dispatch: _Dispatch
    ) -> tuple[list[_Item], Sequence[Any], float]:
        """In the worker's thread: drop the items whose callers have gone, run the rest.
        (Reading a future's state from this thread is safe; only the loop changes it.)"""
        if not dispatch.start():  # a bulk batch pulled back for a live one
            return [], [], 0.0
        live = [item for item in dispatch.batch if not item.gone]
        try:
            loop.call_soon_threadsafe(self._began, dispatch, live, time.perf_counter())
        except RuntimeError:  # the loop has closed: nobody is waiting for this batch
            return [], [], 0.0
        if not live:
            return live, [], 0.0
        started = time.perf_counter()
        with preemption.running(dispatch.stop):
            results = self._process(dispatch.worker, [item.payload for item in live])
        if len(results) != len(live):
            raise RuntimeError(f"batch of {len(live)} gave {len(results)} results")
        return live, results, time.perf_counter() - started

    def _fail(self, batch: list[_Item], error: BaseException) -> None:
        if isinstance(error, ServiceError):
            failure: ServiceError = error
        else:
            log.error("inference batch of %d on %s failed", len(batch), self.name, exc_info=error)
            failure = InferenceFailed(f"inference failed on model {self.name!r} for this batch")
        for item in batch:
            item.request.fail(failure)
        self._gone_waiting = True  # their requests' other inputs need not run

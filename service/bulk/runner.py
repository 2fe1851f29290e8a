"""Runs batch jobs: each input line is one request to its route, made in-process through the
app (the same validation, errors and response as over HTTP) in the bulk priority class.

One runner per data directory: every process of the service starts one, and the one that
holds the directory's lock (``runner.lock``, released by the OS when its process dies) runs
the jobs, one at a time, oldest first. A job's state lives in the store: a restarted runner
picks up the job where the last committed results end, and a line whose result was lost
runs again but is recorded once (store.py). Lines that get 429 or 503 are tried again after
a wait; other failures are written to the error file and the job goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from starlette.types import ASGIApp, Message

from service.bulk import metrics as bulk_metrics
from service.bulk.shapes import MAX_REPORTED_ERRORS, BadLine, Line, output_line, parse_line
from service.bulk.store import Result, Row, Store
from service.engine.priority import BULK

log = logging.getLogger(__name__)
IDLE_POLL_S = 1.0  # a job created by another process is noticed within this
FLUSH_S = 0.25  # results are committed at least this often (and at every 256)
FLUSH_LINES = 256
RETRYABLE = (429, 503)
RETRY_STEP_S = 5.0  # after a job's step failed unexpectedly


@dataclass
class Progress:
    """The running job's rate, from the lines done since this runner took it up."""

    started: float = field(default_factory=time.monotonic)
    done: int = 0

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0


class JobRunner:
    def __init__(
        self,
        app: ASGIApp,
        store: Store,
        *,
        concurrency: int,
        max_attempts: int,
        ready: Callable[[], bool],
        api_key: str | None = None,
        observer: bulk_metrics.BulkObserver | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.ready = ready
        self.headers = [(b"content-type", b"application/json")]
        if api_key:
            self.headers.append((b"authorization", f"Bearer {api_key}".encode()))
        self.observer = observer or bulk_metrics.BulkObserver(None)
        self._wake = asyncio.Event()
        self.holding_lock = False

    def wake(self) -> None:
        """A job was created or cancelled in this process: look now."""
        self._wake.set()

    async def run(self, until: str | None = None) -> None:
        """Take the directory's lock, then run jobs forever (with `until`: until that job
        has ended). Cancel the task to stop: lines in flight are simply not recorded."""
        lock = await take_lock(self.store.directory / "runner.lock")
        self.holding_lock = True
        try:
            while True:
                job = await asyncio.to_thread(self._job, until)
                if job is None:
                    if until is not None:
                        return
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_POLL_S):
                            await self._wake.wait()
                    continue
                try:
                    await self._step(job)
                except Exception:  # logged; the job stays where its store says, and resumes
                    log.exception("batch job %s failed a step; trying again", job["id"])
                    await asyncio.sleep(RETRY_STEP_S)
        finally:
            self.holding_lock = False
            lock.close()

    def _job(self, until: str | None) -> Row | None:
        if until is None:
            return self.store.next_job()
        job = self.store.batch(until)
        return job if job is not None and job["status"] in _STEPS else None

    async def _step(self, job: Row) -> None:
        await _STEPS[job["status"]](self, job)

    # --- the steps of a job -------------------------------------------------------------
    async def _validate(self, job: Row) -> None:
        errors, total = await asyncio.to_thread(self._check_input, job)
        if errors:
            listed = [
                {"code": e.code, "message": e.message, "param": e.param, "line": n + 1}
                for n, e in errors
            ]
            await asyncio.to_thread(
                self.store.set_status,
                job["id"],
                "failed",
                errors=json.dumps({"object": "list", "data": listed}),
                total=total,
            )
            return
        await asyncio.to_thread(self.store.set_status, job["id"], "in_progress", total=total)

    def _check_input(self, job: Row) -> tuple[list[tuple[int, BadLine]], int]:
        errors: list[tuple[int, BadLine]] = []
        seen: set[str] = set()
        total = 0
        with self._input(job) as lines:
            for number, raw in lines:
                total += 1
                try:
                    line = parse_line(number, raw, job["endpoint"])
                    if line.custom_id in seen:
                        raise BadLine(
                            "duplicate_custom_id",
                            f"custom_id {line.custom_id!r} is used by an earlier line",
                            "custom_id",
                        )
                    seen.add(line.custom_id)
                except BadLine as error:
                    if len(errors) < MAX_REPORTED_ERRORS:
                        errors.append((number, error))
        if total == 0:
            errors.append((0, BadLine("empty_file", "the input file holds no lines")))
        return errors, total

    @contextlib.contextmanager
    def _input(self, job: Row) -> Iterator[Iterator[tuple[int, bytes]]]:
        """The input file's non-blank lines, numbered from 0."""
        row = self.store.file(job["input_file_id"])
        if row is None:
            raise FileNotFoundError(job["input_file_id"])
        with Path(row["path"]).open("rb") as handle:
            yield _numbered(handle)

    async def _process(self, job: Row) -> None:
        """Run the lines not yet recorded; commit their results as they come."""
        batch_id = job["id"]
        done = await asyncio.to_thread(self.store.done_lines, batch_id)
        progress = Progress()
        pending: list[Result] = []
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        cancelled = False
        failed: list[int] = []  # lines whose run raised: the job goes on, and is retried
        last_flush = time.monotonic()

        async def flush() -> bool:
            """Commit; True when the job was cancelled meanwhile."""
            nonlocal pending, last_flush
            taken, pending = pending, []
            last_flush = time.monotonic()
            await asyncio.to_thread(self.store.record, batch_id, taken, progress.rate())
            current = await asyncio.to_thread(self.store.batch, batch_id)
            if current is None:
                return True
            left = current["total"] - current["completed"] - current["failed"]
            self.observer.progress(taken, progress.rate(), left)
            return bool(current["status"] != "in_progress")

        async def take_slot() -> bool:
            """Wait for a free slot, committing results and watching for a cancel meanwhile
            (a slot may take a whole batch to free); False: the job was cancelled."""
            while True:
                try:
                    async with asyncio.timeout(FLUSH_S):
                        await slots.acquire()
                    return True
                except TimeoutError:
                    if await flush():
                        return False

        async def drain() -> bool:
            """Wait for the lines in flight the same way; False: the job was cancelled."""
            while tasks:
                await asyncio.wait(set(tasks), timeout=FLUSH_S)
                if await flush():
                    return False
            return True

        async def run_line(line: Line) -> None:
            try:
                result = await self._run_line(job["endpoint"], line)
                pending.append(result)  # after the await: flush() swaps the list meanwhile
                progress.done += 1
            except Exception:  # a bug: the job must not end with this line unanswered
                log.exception("batch line %d of %s failed", line.number, batch_id)
                failed.append(line.number)
            finally:
                slots.release()

        # Reading a line of a local file takes microseconds: read on the loop.
        try:
            with self._input(job) as lines:
                for number, raw in lines:
                    if number in done:
                        continue
                    line = parse_line(number, raw, job["endpoint"])  # checked when validated
                    if not await take_slot():
                        cancelled = True
                        break
                    task = asyncio.create_task(run_line(line))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    due = len(pending) >= FLUSH_LINES or time.monotonic() - last_flush > FLUSH_S
                    if due and await flush():
                        cancelled = True
                        break
            cancelled = cancelled or not await drain()
        finally:  # cancelled, stopping (or a bug): what is still in flight is not recorded
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = await flush() or cancelled
        if failed and not cancelled:
            raise RuntimeError(f"{len(failed)} lines of {batch_id} raised; the job is retried")
        if not cancelled:
            await asyncio.to_thread(self.store.set_status, batch_id, "finalizing")
        self.observer.progress([], 0.0)

    async def _run_line(self, endpoint: str, line: Line) -> Result:
        attempt = 0
        while True:
            while not self.ready():  # starting, or the engine restarting: not the line's fault
                await asyncio.sleep(IDLE_POLL_S)
            status, body = await self.call(endpoint, line.body)
            if status in RETRYABLE and not self.ready():
                continue  # draining, or the engine went: the line waits, no try counted
            attempt += 1
            if status not in RETRYABLE or attempt >= self.max_attempts:
                break
            await asyncio.sleep(min(2 ** (attempt - 1), 30))
        ok = 200 <= status < 300
        return line.number, ok, output_line(line.custom_id, status, body), _tokens(body)

    async def call(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST `body` to the app's `path` in this process, in the bulk priority class."""
        token = BULK.set(True)
        try:
            return await asgi_post(self.app, path, body, self.headers)
        finally:
            BULK.reset(token)

    async def _finalize(self, job: Row) -> None:
        await asyncio.to_thread(self._write_outputs, job, "completed")

    async def _cancel(self, job: Row) -> None:
        await asyncio.to_thread(self._write_outputs, job, "cancelled")

    def _write_outputs(self, job: Row, status: str) -> None:
        """Write the output and error files from the recorded results, then end the job.
        Ids are the job's own, so a crash in the middle writes the same files again."""
        batch_id = job["id"]
        suffix = batch_id.removeprefix("batch_")
        fields: dict[str, Any] = {}
        for ok, name in ((True, "output"), (False, "error")):
            file_id = f"file-{suffix}-{name}"
            path = self.store.files_dir / f"{file_id}.jsonl"
            written = 0
            with path.open("w") as out:
                for text in self.store.results(batch_id, ok):
                    out.write(text + "\n")
                    written += 1
            if ok or written:  # an error file only when some line failed, as OpenAI
                self.store.register_file(file_id, f"{batch_id}_{name}.jsonl", f"batch_{name}", path)
                fields[f"{name}_file_id"] = file_id
            else:
                path.unlink()
        self.store.set_status(batch_id, status, **fields)
        self.store.forget_results(batch_id)


_STEPS = {
    "validating": JobRunner._validate,
    "in_progress": JobRunner._process,
    "finalizing": JobRunner._finalize,
    "cancelling": JobRunner._cancel,
}


def _numbered(handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    number = 0
    for raw in handle:
        if raw.strip():
            yield number, raw
            number += 1


def _tokens(body: bytes) -> int:
    """The input tokens a response reports in its usage (0 when it has none)."""
    at = body.rfind(b'"total_tokens":')
    if at < 0:
        return 0
    digits = body[at + 15 : at + 40].lstrip().split(b"}")[0].split(b",")[0]
    return int(digits) if digits.isdigit() else 0


async def asgi_post(
    app: ASGIApp, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """One POST through the app, as a server would make it: its status and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": {},
    }
    answered = asyncio.Event()
    sent = False
    status = 500
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    try:
        await app(scope, receive, send)
    except Exception:  # the app answered 500 and re-raised (Starlette's ServerErrorMiddleware)
        log.exception("batch line to %s failed", path)
        if not chunks:
            return 500, b'{"error": {"message": "internal error", "type": "server_error"}}'
    finally:
        answered.set()
    return status, b"".join(chunks)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def take_lock(path: Path) -> IO[bytes]:
    """Wait (in a thread of its own, without polling) for the exclusive lock on `path`."""
    handle = path.open("ab")
    loop = asyncio.get_running_loop()
    taken: asyncio.Future[None] = loop.create_future()

    def wait() -> None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except (OSError, ValueError):  # closed: the wait was given up
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: the process is ending
            loop.call_soon_threadsafe(_resolve, taken)

    threading.Thread(target=wait, name="batch-runner-lock", daemon=True).start()
    try:
        await taken
    except asyncio.CancelledError:
        handle.close()  # closing the file drops the lock if the thread took it meanwhile
        raise
    log.info("running batch jobs from %s (pid %d)", path.parent, os.getpid())
    return handle

"""Bulk work below live traffic (issue 32, docs/batch.md): `make bench` section 8, or alone
with `python -m bench.bulk`.

- live: single-query requests at a steady rate (open loop: each is sent at its time whether
  or not the previous one has answered), p50 and p99, with the service idle and while a
  large batch job runs;
- bulk: a batch job's passages per second, from its creation until its output is written,
  as a ratio to the in-process ceiling (the best of tokenizers + ONNX Runtime with
  length-sorted batches; target 0.9), and a long job's rate in its steady state (what a
  corpus of millions sees: a 1,024-passage job spends seconds starting and finishing);
- live during a job with the defaults (the running bulk batch stopped for live work, and
  a smaller bulk budget while it comes) and as before (neither; a second server), each with
  the job's rate meanwhile: the latency bought against the throughput it costs.

Environment: BENCH_LIVE_RATE (requests/s, default 5), BENCH_LIVE_S (default 20),
BENCH_PER_LINE (passages per job line, default 1 and 16), BENCH_BUSY_ALL.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np

from bench import corpus, inprocess, served
from bench.report import say

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", ROOT / "models" / "all-MiniLM-L6-v2"))
RATE = float(os.environ.get("BENCH_LIVE_RATE", "5"))
LIVE_S = float(os.environ.get("BENCH_LIVE_S", "20"))
PER_LINE = [int(n) for n in os.environ.get("BENCH_PER_LINE", "1,16").split(",")]
THREADS = int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1)))
# Live latency during a job is also measured with these settings (a server each), against
# the defaults: bulk batches stopped for live work, with a smaller budget while it comes.
# BENCH_BUSY_ALL=1 adds each of the two alone.
NO_STOP = {"EMBED_BULK_PREEMPT": "false"}
ONE_BUDGET = {"EMBED_BULK_LIVE_MAX_BATCH_TOKENS": "2048"}
BUSY_VARIANTS = [("as before: no stop, one budget", {**NO_STOP, **ONE_BUDGET})]
if os.environ.get("BENCH_BUSY_ALL") == "1":
    BUSY_VARIANTS += [("stop only", ONE_BUDGET), ("smaller budget only", NO_STOP)]


async def _live(
    url: str, model: str, queries: list[str], rate: float, seconds: float
) -> list[float]:
    """Latencies (s) of single-query requests sent at `rate` per second for `seconds`."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(text: str) -> None:
            nonlocal errors
            started = time.perf_counter()
            response = await client.post("/v1/embeddings", json={"input": text, "model": model})
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200

        await one(queries[0])  # a connection, warm
        latencies.clear()
        began = time.perf_counter()
        tasks = []
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(queries[n % len(queries)])))
        await asyncio.gather(*tasks)
    if errors:
        raise RuntimeError(f"{errors} live requests failed")
    return latencies


def live(url: str, model: str, queries: list[str]) -> tuple[float, float]:
    latencies = asyncio.run(_live(url, model, queries, RATE, LIVE_S))
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return float(p50), float(p99)


@functools.cache
def control() -> httpx.Client:
    """One client for the job's own calls (upload, create, poll, cancel). A new client per
    call (httpx.get) costs ~34 ms of CPU, most of it building a TLS context: polled every
    50 ms, that kept most of a core busy beside a 2-core server and read the job's rate
    0.1-0.3 of the ceiling low; through one client a poll costs ~0.9 ms."""
    return httpx.Client(timeout=60)


def start_job(url: str, model: str, passages: list[str], per_line: int) -> str:
    lines = [
        json.dumps(
            {
                "custom_id": f"p{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": model, "input": passages[i : i + per_line]},
            }
        )
        for i in range(0, len(passages), per_line)
    ]
    upload = {"file": ("corpus.jsonl", ("\n".join(lines) + "\n").encode())}
    upload_to = f"{url}/v1/files"
    file_id = control().post(upload_to, files=upload, data={"purpose": "batch"}).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/embeddings"}
    return str(control().post(f"{url}/v1/batches", json=body).json()["id"])


def job_status(url: str, batch_id: str) -> dict[str, object]:
    status: dict[str, object] = control().get(f"{url}/v1/batches/{batch_id}").json()
    return status


def job_rate(url: str, model: str, passages: list[str], per_line: int) -> float:
    """Passages per second of a job alone, from its creation until it is completed."""
    began = time.perf_counter()
    batch_id = start_job(url, model, passages, per_line)
    while (status := job_status(url, batch_id))["status"] != "completed":
        if status["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"the bench job ended {status['status']}: {status}")
        time.sleep(0.05)
    counts = status["request_counts"]
    assert isinstance(counts, dict) and counts["failed"] == 0, counts
    return len(passages) / (time.perf_counter() - began)


def ceiling(passages: list[str], graph: str) -> float:
    """The in-process ceiling, as make bench's section 1 finds it on its usual best layouts:
    one session on every core with batches of 32, and single-thread sessions with 16."""
    layouts = [(1, THREADS, 32), (THREADS, 1, 16)]
    return max(
        inprocess.throughput(MODEL_DIR, graph, passages, batch, threads, sessions=sessions)[0]
        for sessions, threads, batch in layouts
    )


def bulk_lines(name: str, passages: list[str], queries: list[str], best: float) -> None:
    say("\n## 8. Bulk work below live traffic (batch jobs, docs/batch.md)\n")
    say(
        f"live: one query per request, {RATE:g}/s for {LIVE_S:g} s (open loop); bulk: a batch "
        f"job over the {len(passages)} passages, from creation to output written; ceiling "
        f"{best:.1f} passages/s in-process\n"
    )
    with tempfile.TemporaryDirectory() as data:
        # No result cache here: every job runs the same passages (cache_line measures it).
        env = {
            "EMBED_MODELS": f"{name}@{MODEL_DIR}",
            "EMBED_DATA_DIR": data,
            "EMBED_CACHE_MAX_ENTRIES": "0",
        }
        with served.server(env) as (url, _):
            idle = live(url, name, queries)
            row("live, idle", f"p50 {idle[0]:.1f} ms", f"p99 {idle[1]:.1f} ms")
            for per_line in PER_LINE:
                rate = job_rate(url, name, passages, per_line)
                row(
                    f"bulk alone, {per_line} passage{'s' if per_line > 1 else ''} a line",
                    f"{rate:.1f} passages/s",
                    f"{rate / best:.2f} of the ceiling",
                )
            _, steady = steady_job(url, name, passages, best, lambda: time.sleep(LIVE_S))
            row(
                f"bulk alone, steady state ({max(PER_LINE)} passages a line, {LIVE_S:g} s "
                "of a long job)",
                f"{steady:.1f} passages/s",
                f"{steady / best:.2f} of the ceiling",
            )
            busy_line(url, name, passages, queries, best, "default settings")
        for label, overrides in BUSY_VARIANTS:
            with served.server({**env, **overrides}) as (url, _):
                busy_line(url, name, passages, queries, best, label)
    cache_line(name, passages, best)


def busy_line(
    url: str, model: str, passages: list[str], queries: list[str], best: float, label: str
) -> None:
    """Live latency while a job runs, and the job's passages/s during the live run."""
    busy, rate = steady_job(url, model, passages, best, lambda: live(url, model, queries))
    row(
        f"live, during a job ({label})",
        f"p50 {busy[0]:.1f} ms",
        f"p99 {busy[1]:.1f} ms",
        f"(job {rate:.1f} passages/s meanwhile, {rate / best:.2f} of the ceiling)",
    )


def steady_job(
    url: str, model: str, passages: list[str], best: float, meanwhile: Callable[[], T]
) -> tuple[T, float]:
    """What `meanwhile` returns, run while a job is in its steady state (started, not near
    its end), and the job's passages/s over that time (from its committed counts)."""
    per_line = max(PER_LINE)
    # a job big enough to outlast the live run
    big = passages * (int(3 * best * (LIVE_S + 10) / len(passages)) + 1)
    batch_id = start_job(url, model, big, per_line)
    while job_status(url, batch_id)["status"] != "in_progress":
        time.sleep(0.05)
    time.sleep(1.0)
    before = job_status(url, batch_id)
    began = time.perf_counter()
    result = meanwhile()
    still = job_status(url, batch_id)
    seconds = time.perf_counter() - began
    control().post(f"{url}/v1/batches/{batch_id}/cancel")
    if still["status"] != "in_progress":
        say("(the job ended before the live run did: make it bigger)")
    first, last = before["request_counts"], still["request_counts"]
    assert isinstance(first, dict) and isinstance(last, dict)
    return result, (last["completed"] - first["completed"]) * per_line / seconds


def cache_line(name: str, passages: list[str], best: float) -> None:
    """Re-indexing an unchanged corpus with the result cache on (the default)."""
    with tempfile.TemporaryDirectory() as data:
        env = {"EMBED_MODELS": f"{name}@{MODEL_DIR}", "EMBED_DATA_DIR": data}
        with served.server(env) as (url, _):
            first = job_rate(url, name, passages, max(PER_LINE))
            again = job_rate(url, name, passages, max(PER_LINE))
    row(
        "bulk, the same corpus again (cache on)",
        f"{again:.1f} passages/s",
        f"{again / best:.2f} of the ceiling (first run {first:.1f})",
    )


def row(*cells: object) -> None:
    say("| " + " | ".join(str(c) for c in cells) + " |")


def main() -> None:
    metadata = json.loads((MODEL_DIR / "service_model.json").read_text())
    name = metadata["spec"]["name"]
    graph = metadata["variants"][metadata["default_cpu"]]
    passages = corpus.load("passages.jsonl", int(os.environ.get("BENCH_PASSAGES", "1024")))
    queries = corpus.load("queries.jsonl", 256)
    bulk_lines(name, passages, queries, ceiling(passages, graph))


if __name__ == "__main__":
    main()

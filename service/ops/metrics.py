"""Prometheus metrics: one registry per app, one family prefix, durations in seconds.

In the multi-process mode (``EMBED_WORKERS`` above 1) the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` for its processes: prometheus-client then keeps every value in
a file per process there, and any request-handling process's ``/metrics`` sums them over all
processes, the engine's included (prometheus-client's multiprocess mode). Counters of a
process that died stay counted; the queue depth gauge counts live processes only.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

PREFIX = "embed"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests answered", ["route", "model", "status"], registry=r
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "End-to-end request duration",
            ["route", "model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            f"{PREFIX}_tokenization_seconds",
            "Preparing one request's inputs",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time a request waited until its inputs' batches started (the last of them)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            f"{PREFIX}_inference_seconds",
            "One batch's inference and post-processing",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Inputs per inference batch",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            f"{PREFIX}_batch_tokens",
            "Padded tokens per inference batch",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth",
            "Inputs waiting for a batch",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected", "Requests refused by the batcher", ["model", "reason"], registry=r
        )
        self.solo_batches = Counter(
            f"{PREFIX}_solo_batches",
            "Batches run alone on the multi-thread session (adaptive sessions, docs/scaling.md)",
            ["model"],
            registry=r,
        )

    def observer(self, model: str) -> ModelObserver:
        return ModelObserver(self, model)

    def render(self) -> bytes:
        directory = os.environ.get(MULTIPROCESS_DIR)
        if not directory:
            return generate_latest(self.registry)
        collected = CollectorRegistry()
        MultiProcessCollector(collected, path=directory)  # type: ignore[no-untyped-call]  # untyped
        return generate_latest(collected)


class ModelObserver:
    """The batcher's view of the metrics, with the model label bound."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._tokenize = metrics.tokenize_seconds.labels(model)
        self._queue = metrics.queue_seconds.labels(model)
        self._inference = metrics.inference_seconds.labels(model)
        self._size = metrics.batch_size.labels(model)
        self._tokens = metrics.batch_tokens.labels(model)
        self._solo = metrics.solo_batches.labels(model)
        self._depth = metrics.queue_depth.labels(model)
        self._rejected = metrics.rejected
        self._model = model

    def tokenized(self, seconds: float) -> None:
        self._tokenize.observe(seconds)

    def batch_done(self, size: int, tokens: int, seconds: float) -> None:
        self._size.observe(size)
        self._tokens.observe(tokens)
        self._inference.observe(seconds)

    def waited(self, seconds: float) -> None:
        self._queue.observe(seconds)

    def queue_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def solo_batch(self) -> None:
        self._solo.inc()

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self._model, reason).inc()

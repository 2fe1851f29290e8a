"""Batch jobs in /metrics: lines done by outcome, input tokens, and the running job's rate
and lines left."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge

from service.bulk.store import Result
from service.ops.metrics import PREFIX, Metrics


class BulkObserver:
    """Counts what the job runner records (no-op without metrics: embed-file)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.lines: Counter | None = None
        self.rate: Gauge | None = None
        self.left: Gauge | None = None
        if metrics is None:
            return
        registry = metrics.registry
        self.lines = Counter(
            f"{PREFIX}_batch_lines",
            "Input lines of batch jobs recorded, by outcome (completed, failed)",
            ["outcome"],
            registry=registry,
        )
        self.tokens = Counter(
            f"{PREFIX}_batch_input_tokens", "Input tokens of batch job lines", registry=registry
        )
        self.rate = Gauge(
            f"{PREFIX}_batch_lines_per_second",
            "Lines per second of the batch job running now (0: none)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.left = Gauge(
            f"{PREFIX}_batch_lines_left",
            "Input lines of the batch job running now that are not done yet",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def progress(self, results: Sequence[Result], rate: float, left: int = 0) -> None:
        if self.lines is None or self.rate is None or self.left is None:
            return
        self.left.set(left)
        completed = sum(1 for _, ok, _, _ in results if ok)
        self.lines.labels("completed").inc(completed)
        self.lines.labels("failed").inc(len(results) - completed)
        self.tokens.inc(sum(tokens for *_, tokens in results))
        self.rate.set(rate)

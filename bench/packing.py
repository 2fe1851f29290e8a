"""`python -m bench.packing`: what one inference call costs on this machine, and which
EMBED_BATCH_OVERHEAD_TOKENS packs a closed loop of clients best.

1. Times the default graph in-process over a grid of (batch, width) shapes.
2. The fixed cost of a call, in padded-token equivalents: the line through one item and a
   batch of 8 at each width, its intercept over its slope per token (median of widths).
3. Replays the bench corpus through the batcher's own `form_batch` in a simulated closed loop
   of C clients (each sends its next passage when the last comes back), with the measured
   shape times as the cost of each batch, for several overheads. No HTTP and no event loop:
   this isolates batch packing, and prints each overhead's throughput as a ratio to sorted
   batches (the in-process ceiling) under the same costs.

Environment: BENCH_MODEL_DIR, BENCH_THREADS, BENCH_PASSAGES as for `make bench`.
"""

from __future__ import annotations

import heapq
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench import corpus, inprocess
from service.engine.batcher import BatchConfig
from service.engine.formation import form_batch
from service.engine.runner import CPU
from service.engine.scaling import session_layout
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", ROOT / "models" / "all-MiniLM-L6-v2"))
THREADS = int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1)))
PASSAGES = int(os.environ.get("BENCH_PASSAGES", "1024"))
BATCHES = (1, 2, 4, 8, 16, 32)
WIDTHS = (16, 32, 64, 128)
OVERHEADS = (0.0, 4.0, 8.0, 16.0, 32.0, 64.0)

CostMs = Callable[[int, int], float]  # (items, padded width) -> milliseconds


def time_shapes(graph: Path, threads: int) -> dict[tuple[int, int], float]:
    """Milliseconds per call of the graph for each (batch, width), best of a few runs."""
    sess = inprocess.session(graph, threads)
    table = {}
    for width in WIDTHS:
        for batch in BATCHES:
            feeds = {name: np.ones((batch, width), dtype=np.int64) for name in sess.input_names}
            sess.run(feeds)
            runs = max(3, 4096 // (batch * width))
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                sess.run(feeds)
                times.append(time.perf_counter() - started)
            table[(batch, width)] = min(times) * 1000
    return table


def interpolated(table: dict[tuple[int, int], float]) -> CostMs:
    """Cost of any (items, width) from the grid: linear between grid points, proportional
    beyond the widest width."""
    batches = sorted({b for b, _ in table})
    widths = sorted({w for _, w in table})

    def at_batch(batch: int, width: int) -> float:
        row = [table[(batch, w)] for w in widths]
        if width > widths[-1]:
            return row[-1] * width / widths[-1]
        return float(np.interp(width, widths, row))

    def cost(items: int, width: int) -> float:
        if items >= batches[-1]:
            return at_batch(batches[-1], width) * items / batches[-1]
        low = max(b for b in batches if b <= items)
        high = min(b for b in batches if b >= items)
        if low == high:
            return at_batch(low, width)
        share = (items - low) / (high - low)
        return at_batch(low, width) * (1 - share) + at_batch(high, width) * share

    return cost


def call_overhead_tokens(table: dict[tuple[int, int], float], batch: int = 8) -> float:
    """Fixed cost of one call in padded tokens: the intercept over the slope of a line
    through (1 item, `batch` items) at each width, median over widths."""
    estimates = []
    for width in sorted({w for _, w in table}):
        per_item = (table[(batch, width)] - table[(1, width)]) / (batch - 1)
        fixed = table[(1, width)] - per_item
        estimates.append(fixed / (per_item / width))
    return float(statistics.median(estimates))


def closed_loop(
    lengths: Sequence[int],
    cost_ms: CostMs,
    overhead_tokens: float,
    clients: int,
    round_trip_ms: float = 1.5,
    max_items: int = BatchConfig.max_items,
    max_tokens: int = BatchConfig.max_tokens,
    served: int = 3000,
    workers: int = 1,
) -> tuple[float, float]:
    """Items/s and mean batch size of `clients` clients sending `lengths` in turn to
    `workers` sessions side by side, each forming its next batch with form_batch as soon as
    it is free (each call costs `cost_ms` on its own session)."""
    arrivals: list[tuple[float, int, int]] = []  # (time, sequence, length)
    sequence = 0
    for _ in range(clients):
        heapq.heappush(arrivals, (0.0, sequence, lengths[sequence % len(lengths)]))
        sequence += 1
    queue: list[tuple[float, int, int]] = []
    free_at = [0.0] * workers  # when each worker finishes its batch
    done, sizes = 0, []
    while done < served:
        worker = min(range(workers), key=free_at.__getitem__)
        now = free_at[worker]
        while arrivals and arrivals[0][0] <= now:
            queue.append(heapq.heappop(arrivals))
        if not queue:
            free_at[worker] = arrivals[0][0]
            continue
        chosen = form_batch(
            [length for _, _, length in queue],
            max_items,
            max_tokens,
            BatchConfig.window,
            overhead_tokens,
        )
        picked = set(chosen)
        batch = [queue[i] for i in chosen]
        queue = [item for i, item in enumerate(queue) if i not in picked]
        now += cost_ms(len(batch), max(length for _, _, length in batch))
        free_at[worker] = now
        done += len(batch)
        sizes.append(len(batch))
        for _ in batch:
            length = lengths[sequence % len(lengths)]
            heapq.heappush(arrivals, (now + round_trip_ms, sequence, length))
            sequence += 1
    return done / max(free_at) * 1000, float(np.mean(sizes))


def sorted_ceiling(
    lengths: Sequence[int], cost_ms: CostMs, batches: Sequence[int], workers: int = 1
) -> float:
    """Items/s of the whole corpus in length-sorted batches of the best size, on `workers`
    sessions side by side."""
    ordered = sorted(lengths)
    best = 0.0
    for size in batches:
        chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        total = sum(cost_ms(len(chunk), max(chunk)) for chunk in chunks)
        best = max(best, workers * len(ordered) / total * 1000)
    return best


def under_load() -> tuple[int, int]:
    """(sessions, threads each) that the service runs a dense model's batches on under load:
    with adaptive sessions, the single-thread ones (docs/scaling.md)."""
    layout, adaptive = session_layout(Settings(), CPU, "dense", cores=THREADS)
    return (len(layout) - 1, 1) if adaptive else (len(layout), layout[0])


def main() -> None:
    metadata = json.loads((MODEL_DIR / "service_model.json").read_text())
    graph = metadata["variants"][metadata["default_cpu"]]
    workers, threads = under_load()
    table = time_shapes(MODEL_DIR / graph, threads)
    print(
        f"# bench.packing: {graph}; under load the service runs batches on {workers} "
        f"session(s) of {threads} thread(s): ms per call on one"
    )
    print("| batch | " + " | ".join(f"width {w}" for w in WIDTHS) + " |")
    print("|---|" + "---|" * len(WIDTHS))
    for batch in BATCHES:
        print(f"| {batch} | " + " | ".join(f"{table[(batch, w)]:.2f}" for w in WIDTHS) + " |")
    print(f"fixed cost of one call: {call_overhead_tokens(table):.1f} padded tokens")
    tok = corpus.tokenizer(MODEL_DIR, 256)
    lengths = [len(e.ids) for e in tok.encode_batch(corpus.load("passages.jsonl", PASSAGES))]
    cost = interpolated(table)
    ceiling = sorted_ceiling(lengths, cost, BATCHES, workers)
    print(f"sorted ceiling under these costs: {ceiling:.1f} passages/s")
    print("| overhead tokens | clients | passages/s | ratio | mean batch |")
    print("|---|---|---|---|---|")
    for clients in (32, 64):
        for overhead in OVERHEADS:
            rate, size = closed_loop(lengths, cost, overhead, clients, workers=workers)
            print(f"| {overhead:g} | {clients} | {rate:.1f} | {rate / ceiling:.3f} | {size:.1f} |")


if __name__ == "__main__":
    main()

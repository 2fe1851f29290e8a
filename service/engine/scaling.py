"""Scaling one model over a machine: replicas on CPU, the GPU batch profile, shape warming.

- Replicas: ``replicas=0`` (the default) picks the count by the provider: on a GPU one
  session; on CPU sessions of ``intra_op_threads`` threads when set, else
  ``cpu_threads_per_replica``, else max(2, isqrt(cores)) threads (1 x 2 on 2 cores, 4 x 4 on
  16: the measured best splits, docs/scaling.md), counting the cores a CPU quota allows.
- Adaptive sessions: where that gives one CPU session of 2-3 threads to a dense model,
  it also gets one single-thread session per thread, sharing the weights (``session_layout``).
- On CUDA a dense model's batcher gets the GPU profile (``gpu_max_batch_items``,
  ``gpu_max_batch_tokens``) and a wider window to sort by length in; padded widths are
  rounded up to ``gpu_pad_multiple``.
- Shape warming runs the session once over the (batch, width) grid it will meet, largest
  first, so the first requests do not pay for the device's allocations and kernel choices
  (on by default on CUDA only: CPU start-up stays fast).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from service.engine.batcher import BatchConfig
from service.engine.runner import CUDA
from service.models.buffers import PadBuffers
from service.models.loaded import LoadedModel
from service.models.text import Encoded
from service.settings import Settings

log = logging.getLogger(__name__)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
GPU_PROFILE_KINDS = ("dense",)
ADAPTIVE_KINDS = ("dense",)  # measured there (docs/scaling.md); other kinds keep replicas
# Adaptive sessions only for a session of at most this many threads: the small machines where
# the auto layout gives one session. A session pinned to many cores (EMBED_INTRA_OP_THREADS
# on a big pod) would get as many single-thread sessions, and 16 x 1 was the slowest split
# measured on 16 cores (shared/GPU.md).
ADAPTIVE_MAX_THREADS = 3
WINDOW_PER_BATCH = 4  # the batcher sorts by length within this many batches' worth of items


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's
    `limits.cpu`), which os.cpu_count() does not see."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def replica_count(settings: Settings, provider: str, cores: int | None = None) -> int:
    """Sessions per model: the setting, or (0) one on a GPU, and on CPU as many sessions of
    `intra_op_threads` (else `cpu_threads_per_replica`, else max(2, isqrt(cores))) threads as
    the cores hold. Two threads at least, for latency: served on 2 cores, a lone request
    runs 2-3 ms faster on 1 x 2 than on 2 x 1. Under load 2 x 1 serves more (0.94 against
    0.85 of the ceiling at 32 clients), so `EMBED_REPLICAS=2` is the throughput setting
    (docs/benchmarks/2026-11-25-cpu-2core-packing.md)."""
    if settings.replicas > 0:
        return settings.replicas
    if provider == CUDA:
        return 1
    cores = cores or available_cores()
    per_session = (
        settings.intra_op_threads or settings.cpu_threads_per_replica or max(2, math.isqrt(cores))
    )
    return max(1, cores // per_session)


def session_threads(settings: Settings, replicas: int, cores: int | None = None) -> int:
    """Threads per session: the setting, or the cores shared among the replicas."""
    return settings.intra_op_threads or max(1, (cores or available_cores()) // replicas)


def session_layout(
    settings: Settings, provider: str, kind: str, cores: int | None = None
) -> tuple[list[int], bool]:
    """Threads of each session of a model, and whether the first one runs solo.

    Adaptive sessions (``adaptive_sessions``, replicas=0, a dense model, CPU, one session of
    2 or 3 threads): that session, then one single-thread session per thread. The batcher
    runs a batch with nothing behind it on the first alone and batches under load on the
    others side by side: on 2 cores the latency of 1 x 2 and the throughput of 2 x 1
    (docs/scaling.md, "Adaptive sessions")."""
    replicas = replica_count(settings, provider, cores)
    threads = session_threads(settings, replicas, cores)
    adaptive = (
        settings.adaptive_sessions
        and settings.replicas == 0
        and provider != CUDA
        and kind in ADAPTIVE_KINDS
        and replicas == 1
        and 1 < threads <= ADAPTIVE_MAX_THREADS
    )
    if adaptive:
        return [threads] + [1] * threads, True
    return [threads] * replicas, False


def batch_config(settings: Settings, provider: str, kind: str = "dense") -> BatchConfig:
    """The batcher's limits: the settings, with the GPU profile for dense models on CUDA.

    Other kinds keep max_batch_items on a GPU too: their outputs grow with the batch (SPLADE's
    logits are batch x tokens x vocabulary) or their items are images, which the token
    budget does not bound."""
    on_gpu = provider == CUDA and kind in GPU_PROFILE_KINDS
    items = settings.gpu_max_batch_items if on_gpu else settings.max_batch_items
    tokens = settings.gpu_max_batch_tokens if on_gpu else settings.max_batch_tokens
    return BatchConfig(
        max_items=items,
        max_tokens=tokens,
        max_wait_s=settings.max_wait_ms / 1000,
        queue_max_items=settings.queue_max_items,
        timeout_s=settings.request_timeout_s,
        window=max(BatchConfig.window, WINDOW_PER_BATCH * items),
        inference_timeout_s=settings.inference_timeout_s,
        overhead_tokens=(
            settings.gpu_batch_overhead_tokens if on_gpu else settings.batch_overhead_tokens
        ),
        bulk_max_tokens=None if on_gpu else settings.bulk_max_batch_tokens,
        bulk_preempt=settings.bulk_preempt and provider != CUDA,
        bulk_live_max_tokens=None if on_gpu else settings.bulk_live_max_batch_tokens,
    )


def shape_grid(
    max_items: int, max_tokens: int, max_length: int, multiple: int
) -> list[tuple[int, int]]:
    """(batch, width) pairs to warm, largest first: every width the padder can produce
    (multiples of ``multiple`` up to max_length, and max_length itself) with batch sizes in
    powers of two up to what the token budget allows at that width, plus that largest size."""
    step = max(multiple, 8)  # on CPU (multiple 1) widths come in steps of 8: a sample
    widths = sorted({*range(step, max_length + 1, step), max_length})
    grid = []
    for width in widths:
        largest = max(1, min(max_items, max_tokens // width))
        sizes = {1 << k for k in range(largest.bit_length()) if 1 << k <= largest} | {largest}
        grid += [(size, width) for size in sizes]
    return sorted(grid, key=lambda shape: (-shape[0] * shape[1], -shape[1]))


def warmed_rows(items: int, width: int, max_items: int, max_tokens: int) -> int:
    """The smallest batch size of shape_grid's at this width that holds ``items``: the next
    power of two, or the largest size the token budget allows; ``items`` itself when even
    that is smaller (a batch the padded width pushed over the budget)."""
    largest = max(1, min(max_items, max_tokens // width))
    if items > largest:
        return items
    return min(1 << (items - 1).bit_length(), largest)


def warm_payloads(model: LoadedModel, size: int, width: int) -> list[Encoded]:
    """``size`` inputs of exactly ``width`` tokens: the model's special tokens around a
    filler token (any id of the vocabulary serves: only the shapes matter here)."""
    encoder = model.encoder
    prefix, suffix = encoder.special_prefix, encoder.special_suffix
    filler = (
        encoder.tokenizer.token_to_id("the") or (max(prefix, default=0) + 1) % encoder.vocab_size
    )
    body = max(0, width - len(prefix) - len(suffix))
    ids = np.asarray([*prefix, *([filler] * body), *suffix][:width], dtype=np.int64)
    return [Encoded(ids)] * size


def warm_shapes(model: LoadedModel, config: BatchConfig, multiple: int) -> int:
    """Run every worker's session over the shape grid; returns the shapes run per worker."""
    grid = shape_grid(config.max_items, config.max_tokens, model.spec.max_length, multiple)
    started = time.perf_counter()
    for worker in range(len(model.runners)):
        for size, width in grid:
            model.process(worker, warm_payloads(model, size, width))
    log.info(
        "warmed %s over %d shapes x %d sessions in %.1fs",
        model.name,
        len(grid),
        len(model.runners),
        time.perf_counter() - started,
    )
    return len(grid)


def configure(model: LoadedModel, settings: Settings) -> None:
    """After loading: the GPU pad multiple on the model's buffers, and shape warming."""
    on_gpu = model.provider == CUDA
    multiple = settings.gpu_pad_multiple if on_gpu else 1
    if isinstance(model.resources, PadBuffers):
        model.resources.multiple = multiple
    warm = settings.warm_shapes == "on" or (settings.warm_shapes == "auto" and on_gpu)
    if warm and model.runners and model.text is not None and model.spec.kind == "dense":
        config = batch_config(settings, model.provider, model.spec.kind)
        warm_shapes(model, config, multiple)
        if settings.gpu_pad_rows and on_gpu and isinstance(model.resources, PadBuffers):
            model.resources.rows_for = functools.partial(
                warmed_rows, max_items=config.max_items, max_tokens=config.max_tokens
            )

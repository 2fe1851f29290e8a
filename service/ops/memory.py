"""glibc malloc settings for the serving process, applied before any model is loaded.

Without ONNX Runtime's arena (off by default, `EMBED_ORT_MEMORY_ARENA`), every tensor of a
run is malloc'd and freed. glibc then raises its mmap threshold each time a big block is
freed, so later big tensors come from the heap and fragment it, and RSS creeps up. Fixing the
threshold keeps big tensors in their own mappings, returned to the system when freed. The
trim threshold (16 MiB) keeps some free memory at each heap's top, so it is not handed back
and faulted in again on every run, but not so much that every thread's heap holds a large
idle top: at 64 MiB, with adaptive sessions' extra threads, RSS climbed 5-7% in the first
minutes of load (docs/benchmarks).

glibc also gives threads their own heaps ("arenas"), up to 8 per core: each inference thread
and each tokenizing thread ends up with one, each with its own fragmentation and idle top.
The service keeps to one per core: on 2 cores, 3 minutes of 32 clients (MiniLM) went
316 -> 332 MiB with glibc's limit and 303 -> 308 MiB with 2, at 190 and 194 passages/s
(docs/benchmarks/2026-11-26-cpu-2core-overheads.md). Fewer than one per core would make
threads on a many-core machine wait for each other's heap; that was not measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's mmap and trim thresholds (bytes); False where there is no glibc or
    `mmap_threshold` is 0 (leave glibc's own, moving, threshold)."""
    if mmap_threshold <= 0:
        return False
    mallopt = _mallopt()
    return bool(
        mallopt is not None
        and mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
        and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    )


def limit_malloc_arenas(arenas: int) -> bool:
    """At most `arenas` glibc heaps for the process; call it before other threads allocate
    (glibc fixes the limit when a second thread first needs a heap). False where there is no
    glibc or `arenas` is 0 (leave glibc's 8 per core)."""
    if arenas <= 0:
        return False
    mallopt = _mallopt()
    return mallopt is not None and mallopt(M_ARENA_MAX, arenas) == 1


def _mallopt() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("no glibc mallopt here; malloc settings left as they are")
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt

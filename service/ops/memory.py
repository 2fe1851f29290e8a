"""glibc malloc settings for the serving process, applied before any model is loaded.

Without ONNX Runtime's arena, every tensor of a run is malloc'd and freed. glibc then raises
its mmap threshold each time a big block is freed, so later big tensors come from the heap
and fragment it, and RSS creeps up. Fixing the threshold keeps big tensors in their own
mappings, returned to the system when freed. The trim threshold (16 MiB) keeps some free
memory at each heap's top, so it is not handed back and faulted in again on every run, but
not so much that every thread's heap holds a large idle top: at 64 MiB, with adaptive
sessions' extra threads, RSS climbed 5-7% in the first minutes of load (docs/benchmarks).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's mmap and trim thresholds (bytes); False where there is no glibc or
    `mmap_threshold` is 0 (leave glibc's own, moving, threshold)."""
    if mmap_threshold <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("no glibc mallopt here; malloc thresholds left as they are")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
        and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    )

"""glibc malloc thresholds (service/ops/memory.py): with the fixed mmap threshold, a big block
goes back to the system when freed; with glibc's moving threshold it stays resident."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from service.ops.memory import limit_malloc_arenas, tune_malloc
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

PROBE = """
import sys
import numpy as np
from service.ops.memory import tune_malloc

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "tuned":
    assert tune_malloc(1 << 20, 1 << 30)
before = rss_mib()
for _ in range(3):
    block = np.ones(2 << 20)  # 16 MiB, every page touched
    del block
print(rss_mib() - before)
"""


def probe(script: str, mode: str) -> str:
    """What `script` prints, run in a fresh interpreter (malloc settings are per process)."""
    done = subprocess.run(
        [sys.executable, "-c", script, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout


def resident_after_frees(mode: str) -> float:
    return float(probe(PROBE, mode))


@glibc
def test_freed_big_blocks_leave_the_process_only_with_the_fixed_threshold() -> None:
    assert resident_after_frees("glibc") >= 12  # glibc raised its threshold: kept on the heap
    assert resident_after_frees("tuned") < 2


def test_the_defaults_run_without_the_arena_and_zero_leaves_glibc_alone() -> None:
    settings = Settings()
    assert settings.malloc_mmap_threshold == 4 << 20 and not settings.ort_memory_arena
    assert settings.malloc_trim_threshold == 16 << 20
    assert not tune_malloc(0, settings.malloc_trim_threshold)


ARENAS = """
import ctypes, sys, tempfile, threading
import numpy as np, onnxruntime, tokenizers  # loaded, as in the service, before the limit
from service.ops.memory import limit_malloc_arenas

if sys.argv[1] == "limited":
    assert limit_malloc_arenas(2)
together = threading.Barrier(8)
kept = []

def allocate():
    together.wait()  # all alive at once: none can take over another's freed heap
    kept.append(np.ones(1 << 14))  # 128 KiB, malloc'd by this thread
    together.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
out = ctypes.c_void_p(libc.fopen(path.encode(), b"w"))
libc.malloc_info(0, out)
libc.fclose(out)
print(open(path).read().count("<heap nr="))
"""


def heaps_after_threads(mode: str) -> int:
    return int(probe(ARENAS, mode))


@glibc
def test_threads_share_the_arena_limit_set_after_the_libraries_load() -> None:
    assert heaps_after_threads("glibc") >= 5  # glibc: a heap per busy thread, up to 8 per core
    assert heaps_after_threads("limited") == 2


def test_the_arena_limit_defaults_to_one_per_core() -> None:
    assert Settings().malloc_arena_max == 0  # __main__: 0 -> available_cores()
    assert not limit_malloc_arenas(0)  # nothing to set

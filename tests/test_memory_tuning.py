"""glibc malloc thresholds (service/ops/memory.py): with the fixed mmap threshold, a big block
goes back to the system when freed; with glibc's moving threshold it stays resident."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from service.ops.memory import tune_malloc
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


def resident_after_frees(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(done.stdout)


@glibc
def test_freed_big_blocks_leave_the_process_only_with_the_fixed_threshold() -> None:
    assert resident_after_frees("glibc") >= 12  # glibc raised its threshold: kept on the heap
    assert resident_after_frees("tuned") < 2


def test_the_defaults_run_without_the_arena_and_zero_leaves_glibc_alone() -> None:
    settings = Settings()
    assert settings.malloc_mmap_threshold == 4 << 20 and not settings.ort_memory_arena
    assert settings.malloc_trim_threshold == 16 << 20
    assert not tune_malloc(0, settings.malloc_trim_threshold)

"""What the supervisor and the processes it starts share: the runtime directory's layout,
and what each process does first (die with the supervisor)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def engine_socket(runtime: Path) -> Path:
    """The engine's Unix socket in the supervisor's runtime directory."""
    return runtime / "engine.sock"


def port_opened(runtime: Path) -> Path:
    """Made by the first request-handling process once it listens on the port: until then a
    refused connection does not mean that no process is ahead of one waiting to join."""
    return runtime / "port-opened"


def metrics_directory(runtime: Path) -> Path:
    """Where every process keeps its metrics (prometheus-client's multiprocess files)."""
    return runtime / "metrics"


def follow_parent(parent: int) -> None:
    """Get SIGTERM when the supervisor dies, so that no process outlives it (Linux); exit at
    once if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(1)

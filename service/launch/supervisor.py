"""The supervisor of the multi-process mode (``EMBED_WORKERS`` above 1; docs/scaling.md).

It reserves the port, starts the engine process (service/engine/main.py) and the
request-handling processes (service/launch/front.py), which each listen on the port with
SO_REUSEPORT, so that the kernel spreads new connections evenly over them (one shared
listening socket let one process accept a burst of 64 connections alone: half the
throughput), and then only watches them:

- a process that dies is started again (the engine's in-flight requests get 503 from their
  request-handling processes at once, and /ready is 503 until the new engine has loaded);
- SIGTERM or SIGINT: the listening socket closes, every request-handling process drains
  (new requests get 503, in-flight ones finish, up to ``shutdown_timeout_s``) and exits; then
  the engine, which has nothing left to run, is stopped; the supervisor exits 0.

It imports neither ONNX Runtime nor the web stack: what it does must not fail.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from service.launch.children import metrics_directory, port_opened
from service.settings import Settings

log = logging.getLogger(__name__)
RESTART_PAUSE_S = 1.0  # a process that dies sooner than this after starting waits this long
KILL_AFTER_S = 10.0  # past the drain timeout, what still runs is killed


@dataclass
class Child:
    role: str  # "engine" or "front"
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.command, env=env)
        self.started = time.monotonic()
        log.info("started %s process %d", self.role, self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else -1


@dataclass
class Supervisor:
    settings: Settings
    argv: Sequence[str]  # the serve command's own arguments, passed on to every process
    workers: int
    runtime: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="embedding-")))
    stopping: bool = False
    listener: socket.socket | None = None
    children: list[Child] = field(default_factory=list)

    def run(self) -> int:
        metrics = metrics_directory(self.runtime)
        metrics.mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.listener = reserve(self.settings.host, self.settings.port)
        prefix = [sys.executable, "-m", "service"]
        runtime = ["--runtime", str(self.runtime), "--parent", str(os.getpid())]
        self.children = [Child("engine", [*prefix, "_engine", *runtime, *self.argv])]
        # The first request-handling process listens at once, so that /health and /ready
        # answer while the engine loads; the others join the port only once they are ready
        # (--when-ready), so that no connection reaches a process still opening the models
        # while /ready, answered by another, already says 200.
        self.children += [
            Child(
                "front", [*prefix, "_front", *(["--when-ready"] if i else []), *runtime, *self.argv]
            )
            for i in range(self.workers)
        ]
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGALRM, self._kill_all)
        for child in self.children:
            child.start(env)
        log.info(
            "serving on %s:%d with %d request-handling processes and one engine",
            self.settings.host,
            self.settings.port,
            self.workers,
        )
        try:
            self._watch(env)
        finally:
            shutil.rmtree(self.runtime, ignore_errors=True)
        return 0

    def _watch(self, env: dict[str, str]) -> None:
        while any(child.process is not None for child in self.children):
            try:
                pid, status = os.wait()
            except ChildProcessError:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            if child is None:
                continue  # an orphan reaped as PID 1
            child.process = None
            _mark_dead(pid, metrics_directory(self.runtime))
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("%s process %d exited (%d)", child.role, pid, code)
                self._after_front_exits()
                continue
            log.error("%s process %d died (%d); starting another", child.role, pid, code)
            if time.monotonic() - child.started < RESTART_PAUSE_S:
                time.sleep(RESTART_PAUSE_S)
            if (
                child.role == "front"
                and "--when-ready" not in child.command
                and port_opened(self.runtime).exists()  # else it died before it listened
            ):
                child.command.insert(child.command.index("_front") + 1, "--when-ready")
            if not self.stopping:
                child.start(env)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("signal %s: draining every request-handling process", signal.Signals(sig).name)
        if self.listener is not None:
            self.listener.close()
        for child in self.children:
            if child.role == "front" and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        signal.alarm(int(self.settings.shutdown_timeout_s + KILL_AFTER_S))
        self._after_front_exits()

    def _after_front_exits(self) -> None:
        """Once no request-handling process runs, nothing can reach the engine: stop it."""
        fronts = [c for c in self.children if c.role == "front" and c.process is not None]
        if fronts:
            return
        for child in self.children:
            if child.role == "engine" and child.process is not None:
                child.process.send_signal(signal.SIGTERM)

    def _kill_all(self, sig: int, frame: FrameType | None) -> None:
        for child in self.children:
            if child.process is not None:
                log.error("%s process %d did not stop in time; killing it", child.role, child.pid)
                child.process.kill()


def reserve(host: str, port: int) -> socket.socket:
    """Bind the port (without listening: no connection is queued here) so that a port in use
    fails at start, and no other program takes it while a request-handling process restarts."""
    listener = listening_socket(host, port)
    listener.bind((host, port))
    return listener


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket for the port, shared with the other processes through SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _mark_dead(pid: int, metrics: Path) -> None:
    """Drop a dead process's live gauges from the shared metrics (its counters stay)."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, str(metrics))  # type: ignore[no-untyped-call]  # untyped library

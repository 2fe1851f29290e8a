"""Every request-handling process learns every model the engine serves, whatever order the
engine's loading, its status messages and the processes' connections happen in (issue 28: a
process that connected while the engine was still loading could miss a model for good and
never turn ready, in 3 of 6 CI runs).

Rounds of a real engine (service/engine/main.py) with three tiny models and several links
(service/front/engine_link.py), with random delays where the order matters: before each model
loads in the engine, before each model opens in a process, before each process connects, and
connections dropped at random while the engine loads. The rounds are bounded in count and
time.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from service.engine import loading
from service.engine.main import Engine
from service.front import engine_link
from service.front.engine_link import EngineLink
from service.models.registry import ModelRegistry
from service.ops.metrics import Metrics
from service.settings import Settings
from service.wire.messages import Status
from tests import tiny_models

ROUNDS = 24
ROUNDS_S = 40.0  # fewer rounds on a slow machine, never longer
LINKS = 3
READY_S = 10.0  # a round's processes are all ready well within this, or the test fails


@pytest.fixture(scope="module")
def three_models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    directories = []
    for i in range(3):
        directory = tmp_path_factory.mktemp(f"status-{i}")
        tiny_models.build_dense_model(directory, name=f"tiny/status-{i}")
        directories.append(str(directory))
    return directories


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> random.Random:
    """Random pauses before each model loads in the engine and opens in a process."""
    rng = random.Random(28)
    load_model, open_model = loading.load_model, engine_link._open

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        time.sleep(rng.uniform(0, 0.04))
        return load_model(*args, **kwargs)

    def slow_open(described: Any) -> Any:
        time.sleep(rng.uniform(0, 0.04))
        return open_model(described)

    monkeypatch.setattr(loading, "load_model", slow_load)
    monkeypatch.setattr(engine_link, "_open", slow_open)
    return rng


async def _one_process(
    link: EngineLink, rng: random.Random, drops: int, dropped: asyncio.Event
) -> None:
    """Connect after a random pause; drop the connection `drops` times at random moments
    (the link reconnects, as after an engine restart), then set `dropped`."""
    await asyncio.sleep(rng.uniform(0, 0.08))
    running = asyncio.create_task(link.run())
    try:
        for _ in range(drops):
            await asyncio.sleep(rng.uniform(0, 0.05))
            connection = link._connection
            if connection is not None and connection.transport is not None:
                connection.transport.close()
        dropped.set()
        await running
    finally:
        running.cancel()


async def _all_ready(links: list[EngineLink], timeout: float) -> bool:
    """Whether every link is connected and ready within `timeout` (polled: readiness has no
    event of its own after a reconnection)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(link.connected and link.registry.ready for link in links):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_the_engine_says_models_are_coming_before_it_listens(
    three_models: list[str], tmp_path: Path
) -> None:
    """The status a process gets on connecting, as it stands when the engine starts to listen
    (a connection may come in that instant, before the loading task has run a step): three
    models coming, not ready. It said "ready, none expected"; a process started --when-ready
    then listened with no model and answered 503 not_ready (tests/test_workers.py, once in a
    CI run)."""
    engine = Engine(Settings(models=three_models))
    serve = engine.server.serve
    at_listen: list[Status] = []

    async def recording(path: str) -> Any:
        at_listen.append(engine.server.status())
        return await serve(path)

    engine.server.serve = recording  # type: ignore[method-assign]
    await engine.start(str(tmp_path / "engine.sock"))
    try:
        (status,) = at_listen
        assert status.expected == 3 and not status.ready and status.models == {}
    finally:
        await engine.stop()


async def test_every_process_learns_every_model(
    three_models: list[str], delays: random.Random, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(models=three_models)
    names = {f"tiny/status-{i}" for i in range(3)}
    premature: list[list[str]] = []  # processes that turned serving with a model missing
    check_serving = EngineLink._check_serving

    def checked(link: EngineLink) -> None:
        was = link.serving.is_set()
        check_serving(link)
        if not was and link.serving.is_set() and set(link.registry.models) != names:
            premature.append(sorted(link.registry.models))

    monkeypatch.setattr(EngineLink, "_check_serving", checked)
    deadline = time.monotonic() + ROUNDS_S
    rounds = 0
    while rounds < ROUNDS and time.monotonic() < deadline:
        rounds += 1
        path = str(tmp_path / f"engine-{rounds}.sock")
        engine = Engine(settings)
        links = [EngineLink(path, ModelRegistry(), Metrics(), 5.0) for _ in range(LINKS)]
        dropped = [asyncio.Event() for _ in links]
        processes = [
            asyncio.create_task(_one_process(link, delays, delays.randint(0, 2), done))
            for link, done in zip(links, dropped, strict=True)
        ]
        await asyncio.sleep(delays.uniform(0, 0.06))  # some processes come first
        await engine.start(path)
        try:
            waiting = [asyncio.wait_for(link.serving.wait(), READY_S) for link in links]
            outcome = await asyncio.gather(*waiting, return_exceptions=True)
            stuck = [
                sorted(link.registry.models)
                for link, result in zip(links, outcome, strict=True)
                if isinstance(result, TimeoutError)
            ]
            assert not stuck, f"round {rounds}: processes never ready, holding only {stuck}"
            await asyncio.wait_for(asyncio.gather(*(done.wait() for done in dropped)), READY_S)
            assert await _all_ready(links, READY_S), f"round {rounds}: not ready after reconnecting"
            for link in links:
                assert set(link.registry.models) == names
            assert not premature, f"round {rounds}: serving before every model: {premature}"
        finally:
            for process in processes:
                process.cancel()
            await asyncio.gather(*processes, return_exceptions=True)
            await engine.stop()
    assert rounds >= 5, f"only {rounds} rounds ran in {ROUNDS_S} s"

"""Shared fixtures: tiny model directories, an in-process app client, a live server."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.models.registry import ModelRegistry
from service.settings import Settings
from tests import engine_mode, tiny_models

ROOT = Path(__file__).resolve().parents[1]
REAL_MINILM = ROOT / "models" / "all-MiniLM-L6-v2"
# One session per model unless a test asks for more: tests count batches and replace
# runners[0], and the default (replicas=0) would give many-core machines several sessions.
os.environ.setdefault("EMBED_REPLICAS", "1")
# No result cache unless a test asks for one (tests/test_result_cache.py): tests count batches
# and inputs run, and send the same texts again.
os.environ.setdefault("EMBED_CACHE_MAX_ENTRIES", "0")


@pytest.fixture(scope="session")
def tiny_dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    directory = tmp_path_factory.mktemp("tiny-dense")
    table = tiny_models.build_dense_model(directory)
    return directory, table


@pytest.fixture(scope="session")
def tiny_minicoil(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random miniCOIL laid out as FastEmbed's Qdrant/minicoil-v1 (minicoil_models.py)."""
    from tests import minicoil_models  # torch and transformers: only where a test needs them

    return minicoil_models.build(tmp_path_factory.mktemp("tiny-minicoil"))


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/ready")
        if response.status_code == 200:
            return
        if response.json().get("reason"):
            raise AssertionError(f"service failed to load: {response.json()}")
        time.sleep(0.02)
    raise AssertionError("service not ready in time")


@contextmanager
def serving(**settings: Any) -> Iterator[TestClient]:
    """An in-process app (lifespan included) with the given settings, ready to call. With
    EMBED_TEST_ENGINE=1 the models live in an engine behind a Unix socket, as in the
    multi-process mode (tests/engine_mode.py)."""
    chosen = Settings(**settings)
    if not engine_mode.ENABLED:
        app = create_app(chosen)
        with TestClient(app) as client:
            wait_ready(client)
            yield client
        return
    with engine_mode.engine_thread(chosen) as (path, engine_registry):
        app = create_app(chosen, engine_socket=path)
        app.state.engine_registry = engine_registry
        with TestClient(app) as client:
            wait_ready(client)
            yield client


def engine_registry(app: Any) -> ModelRegistry:
    """The registry that holds the models' sessions and batchers: the app's own in one
    process, the engine's in the engine mode."""
    registry: ModelRegistry = getattr(app.state, "engine_registry", app.state.registry)
    return registry


@pytest.fixture
def tiny_client(tiny_dense: tuple[Path, np.ndarray]) -> Iterator[TestClient]:
    with serving(models=[str(tiny_dense[0])]) as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def built(directory: Path) -> Path:
    """A model directory that `make models` builds; fails (never skips) when it is missing."""
    if not (directory / "service_model.json").is_file():
        raise AssertionError(f"{directory} is missing: run `make models` (make test does)")
    return directory


@pytest.fixture(scope="session")
def real_minilm() -> Path:
    return built(REAL_MINILM)


TextCheck = Callable[[str], None]


def metric(client: TestClient, line_start: str) -> float:
    """The value of the /metrics sample whose line starts with `line_start` (0 when absent):
    tests compare values before and after, since in the engine mode a test process's
    metrics outlive its apps."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- the container-image checks (tests/test_image.py): `make image-test` only ----------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--image",
        action="store_true",
        help="run the tests marked image against the images `python -m tools.image` built "
        "(root, buildah and mount; `make image-test` builds and runs them)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (never skip) the image tests unless --image asks for them."""
    if config.getoption("--image"):
        return
    image = [item for item in items if item.get_closest_marker("image")]
    if image:
        config.hook.pytest_deselected(items=image)
        items[:] = [item for item in items if not item.get_closest_marker("image")]

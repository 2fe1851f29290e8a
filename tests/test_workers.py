"""The multi-process mode for real: `python -m service` with EMBED_WORKERS=2 starts a
supervisor, one engine and two request-handling processes on one port. Every process is
found with psutil; faults are real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from service.app import create_app
from service.launch.front import PROBE_S
from service.settings import Settings
from tests import tiny_models
from tests.conftest import ROOT, free_port
from tests.prod_server import Server, running
from tests.routes import declared_public, every_request

NAME = "sentence-transformers/all-MiniLM-L6-v2"


def roles(server: Server) -> dict[str, list[psutil.Process]]:
    """The supervisor's children by role: {"_engine": [...], "_front": [...]}."""
    found: dict[str, list[psutil.Process]] = {"_engine": [], "_front": []}
    for child in psutil.Process(server.process.pid).children():
        try:
            line = child.cmdline()
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue  # dead, not yet reaped by the supervisor
        for role in found:
            if role in line:
                found[role].append(child)
    return found


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def counted(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    directory = tmp_path_factory.mktemp("workers-tiny")
    return directory, tiny_models.build_dense_model(directory)


def test_two_workers_share_the_port_the_engine_and_one_metrics(
    tiny: tuple[Path, np.ndarray],
) -> None:
    directory, table = tiny
    with running({"EMBED_MODELS": str(directory), "EMBED_WORKERS": "2"}) as server:
        found = roles(server)
        assert len(found["_engine"]) == 1 and len(found["_front"]) == 2
        before = {p.pid: sum(p.cpu_times()[:2]) for p in found["_front"]}
        line = 'embed_requests_total{model="tiny/dense",route="/v1/embeddings",status="200"}'
        start = counted(server.url, line)
        texts = ["hello world", "the cat sat on the mat", "red green blue"]
        for round_ in range(60):  # a new connection each time: the kernel spreads them
            body = {"model": "tiny/dense", "input": texts[round_ % 3 :]}
            response = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=10)
            assert response.status_code == 200, response.text
            got = np.array([d["embedding"] for d in response.json()["data"]])
            expected = [tiny_models.expected_dense(table, t) for t in texts[round_ % 3 :]]
            np.testing.assert_allclose(got, np.array(expected), atol=1e-6)
        # every request counted once, whichever process answered it and /metrics
        assert counted(server.url, line) - start == 60
        batches = counted(server.url, 'embed_batch_size_count{model="tiny/dense"}')
        assert batches >= 60  # observed in the engine, summed into every /metrics
        ready_body = httpx.get(f"{server.url}/ready").json()
        assert ready_body["models"]["tiny/dense"]["variant"] == "fp32"
        used = [sum(p.cpu_times()[:2]) - before[p.pid] for p in found["_front"]]
        assert all(seconds > 0 for seconds in used), used  # both processes served


def test_api_keys_guard_every_route_in_every_process(tiny: tuple[Path, np.ndarray]) -> None:
    """With keys set, every route and method of the app's route table answers 401 without
    the key, in whichever request-handling process takes the connection, but the declared
    public requests (issue 33); with the key, none does."""
    directory, _ = tiny
    env = {"EMBED_MODELS": str(directory), "EMBED_WORKERS": "2", "EMBED_API_KEYS": "k1"}
    requests = every_request(create_app(Settings(models=[])))
    settings = Settings(models=[], api_keys="k1")
    with running(env) as server:
        for _ in range(2):  # new connections each time: both processes answer some
            for method, path in requests:
                body = {} if method == "POST" else None
                without = httpx.request(method, f"{server.url}{path}", json=body, timeout=10)
                page = declared_public(settings, method, path)
                assert (without.status_code == 401) != page, (method, path, without.status_code)
                key = {"Authorization": "Bearer k1"}
                with_key = httpx.request(
                    method, f"{server.url}{path}", json=body, headers=key, timeout=10
                )
                assert with_key.status_code != 401, (method, path)
        embedded = httpx.post(f"{server.url}/", json={"inputs": "hello world"}, timeout=10)
        assert embedded.status_code == 401


def test_a_killed_request_handling_process_is_replaced(tiny: tuple[Path, np.ndarray]) -> None:
    directory, _ = tiny
    with running({"EMBED_MODELS": str(directory), "EMBED_WORKERS": "2"}) as server:
        victim = roles(server)["_front"][0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        wait_for(
            lambda: (
                len(roles(server)["_front"]) == 2
                and victim.pid not in [p.pid for p in roles(server)["_front"]]
            ),
            "a new request-handling process",
        )
        wait_for(lambda: ready(server.url), "readiness")
        for _ in range(20):
            body = {"model": "tiny/dense", "input": ["hello"]}
            assert httpx.post(f"{server.url}/v1/embeddings", json=body).status_code == 200
        assert "front process" in server.logs() and "died" in server.logs()


def send_while(url: str, texts: list[str], stop: threading.Event, out: list[tuple]) -> None:
    """Requests one after another, each timed: (sent, finished, status, error code)."""
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = client.post(f"{url}/v1/embeddings", json={"model": NAME, "input": texts})
            except httpx.TransportError as exc:
                out.append((sent, time.monotonic(), None, type(exc).__name__))
                continue
            code = response.json()["error"]["code"] if response.status_code != 200 else None
            out.append((sent, time.monotonic(), response.status_code, code))


@pytest.mark.slow
def test_a_dead_engine_fails_in_flight_requests_at_once_and_is_restarted(
    real_minilm: Path,
) -> None:
    texts = [" ".join(["river stone light garden music"] * 40)] * 16  # ~1 s of inference
    env = {"EMBED_MODELS": f"{NAME}@{real_minilm}", "EMBED_WORKERS": "2"}
    with running(env) as server:
        engine = roles(server)["_engine"][0]
        stop = threading.Event()
        outcomes: list[list[tuple]] = [[] for _ in range(4)]
        threads = [
            threading.Thread(target=send_while, args=(server.url, texts, stop, out))
            for out in outcomes
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        killed = time.monotonic()
        engine.send_signal(signal.SIGKILL)
        wait_for(lambda: not ready(server.url), "/ready to turn 503", timeout=5)
        wait_for(lambda: ready(server.url), "a new engine, ready", timeout=120)
        stop.set()
        again = httpx.post(
            f"{server.url}/v1/embeddings", json={"model": NAME, "input": ["hello"]}, timeout=60
        )
        for thread in threads:
            thread.join(70)
        new_engine = roles(server)["_engine"][0]
    every = [o for out in outcomes for o in out]
    in_flight = [o for o in every if o[0] < killed < o[1]]
    assert in_flight, "no request was in flight when the engine died; the test proved nothing"
    for _sent, finished, status, code in in_flight:
        assert status == 503 and code == "engine_unavailable", (status, code)
        assert finished - killed < 2.0  # at once, not at the 30 s request timeout
    assert all(o[2] in (200, 503) for o in every)  # clear answers only, never a hang
    assert again.status_code == 200 and len(again.json()["data"][0]["embedding"]) == 384
    assert new_engine.pid != engine.pid


def test_without_an_engine_requests_get_503_and_health_answers(tmp_path: Path) -> None:
    """A request-handling process whose engine is not there yet (starting, or restarting):
    503 not_ready for the models' routes, never a 404 for a model it has not heard of."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(models=["tiny/dense"]), engine_socket=str(tmp_path / "none.sock"))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503
        response = client.post("/v1/embeddings", json={"model": "tiny/dense", "input": "hi"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "not_ready"


def test_a_replacement_waiting_for_the_engine_exits_on_sigterm(
    tiny: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """A replacement request-handling process waits in its start-up until the engine is
    ready (here: never, there is none). SIGTERM must end it at once; uvicorn alone would
    wait for the start-up to finish, and draining rules out that it ever does."""
    log = tmp_path / "front.log"
    env = {**os.environ, "EMBED_MODELS": str(tiny[0]), "EMBED_PORT": str(free_port())}
    command = [sys.executable, "-m", "service", "_front", "--when-ready"]
    command += ["--runtime", str(tmp_path), "--parent", str(os.getpid())]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        wait_for(lambda: "Waiting for application startup" in log.read_text(), "start-up")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, log.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def listens(process: subprocess.Popen[bytes], port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in psutil.Process(process.pid).net_connections("tcp")
    )


def test_a_process_ready_first_waits_for_the_first_process_to_listen(
    tiny: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """A --when-ready process that turns ready while the first process has not listened yet
    (it is still starting) must not take the empty port: it did, and the port's /ready said
    200 from it while the first process, listening just after, answered 503 (CI, 1 run in
    3). It joins once the first process listens and says ready."""
    port = free_port()
    env = {**os.environ, "EMBED_MODELS": str(tiny[0]), "EMBED_PORT": str(port)}
    env["EMBED_HOST"] = "127.0.0.1"
    own = ["--runtime", str(tmp_path), "--parent", str(os.getpid())]
    service = [sys.executable, "-m", "service"]
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "processes.log"

    def start(*role: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            started.append(
                subprocess.Popen([*service, *role, *own], env=env, cwd=ROOT, stdout=out, stderr=out)
            )
        return started[-1]

    try:
        start("_engine")
        joining = start("_front", "--when-ready")
        wait_for(lambda: "joining the port once" in log.read_text(), "ready in the process")
        time.sleep(10 * PROBE_S)  # the port is still empty: joining it now was the bug
        assert not listens(joining, port), log.read_text()[-2000:]
        first = start("_front")
        wait_for(lambda: ready(f"http://127.0.0.1:{port}"), "the first process, ready")
        wait_for(lambda: listens(joining, port), "the waiting process to join")
        assert listens(first, port)
    finally:
        for process in reversed(started):
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

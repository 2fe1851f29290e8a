"""SIGTERM under load, on the real `python -m service` with the real MiniLM: requests in flight
finish with their full answers, new ones are refused, and the process exits 0."""

from __future__ import annotations

import contextvars
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from service.launch.shutdown import DrainingServer
from service.models.registry import ModelRegistry
from service.ops import logs
from tests.prod_server import running

WORDS = [
    "river",
    "stone",
    "light",
    "garden",
    "music",
    "winter",
    "paper",
    "engine",
    "window",
    "market",
    "forest",
    "silver",
    "morning",
    "letter",
    "bridge",
    "story",
    "ocean",
    "yellow",
    "travel",
    "end",
]


def passages(count: int, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=words)) for _ in range(count)]


@dataclass
class Outcome:
    sent: float
    finished: float
    status: int | None  # None: no HTTP answer (transport error)
    body: dict[str, object] | None
    error: str = ""


def hammer(url: str, texts: list[str], stop: threading.Event, out: list[Outcome]) -> None:
    """Send the same request over one keep-alive connection until the service refuses."""
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = client.post(
                    f"{url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": texts}
                )
            except httpx.TransportError as exc:
                out.append(Outcome(sent, time.monotonic(), None, None, type(exc).__name__))
                return
            out.append(Outcome(sent, time.monotonic(), response.status_code, response.json()))
            if response.status_code != 200:
                return


def vectors(body: dict[str, object]) -> np.ndarray:
    data = body["data"]
    assert isinstance(data, list)
    assert [item["index"] for item in data] == list(range(len(data)))
    return np.array([item["embedding"] for item in data])


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_during_load_finishes_accepted_requests_and_exits_0(
    real_minilm: Path, workers: str
) -> None:
    """One process, and the multi-process mode (the supervisor drains every
    request-handling process, then stops the engine)."""
    texts = passages(16, 40, seed=1)
    env = {
        "EMBED_MODELS": f"sentence-transformers/all-MiniLM-L6-v2@{real_minilm}",
        "EMBED_SHUTDOWN_TIMEOUT_S": "60",
        "EMBED_WORKERS": workers,
    }
    with running(env) as server:
        reference = vectors(
            httpx.post(
                f"{server.url}/v1/embeddings",
                timeout=60,
                json={"model": "all-MiniLM-L6-v2", "input": texts},
            ).json()
        )
        stop = threading.Event()
        outcomes: list[list[Outcome]] = [[] for _ in range(6)]
        threads = [
            threading.Thread(target=hammer, args=(server.url, texts, stop, out)) for out in outcomes
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=90)
        stop.set()
        for thread in threads:
            thread.join(70)
        output = server.logs()
    assert code == 0, output[-3000:]
    every = [outcome for out in outcomes for outcome in out]
    answered = [o for o in every if o.status == 200]
    for outcome in answered:  # every accepted request got its full, correct answer
        assert outcome.body is not None
        np.testing.assert_allclose(vectors(outcome.body), reference, atol=1e-5)
    in_flight = [o for o in answered if o.sent < signalled < o.finished]
    assert in_flight, "no request was in flight at SIGTERM; the test proved nothing"
    for outcome in every:
        if outcome.sent < signalled - 0.1:  # surely accepted before the signal: must succeed
            assert outcome.status == 200, outcome
        elif outcome.status not in (None, 200):  # refused while draining, in the envelope
            assert outcome.status == 503 and outcome.body is not None
            assert outcome.body["error"]["code"] == "shutting_down"  # type: ignore[index]
    assert "draining" in output
    access = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"uvicorn.access"' in line
    ]
    assert access and all(len(entry["request_id"]) == 32 for entry in access)


def test_the_signal_handler_drains_at_once_and_keeps_the_exit_clean() -> None:
    registry = ModelRegistry(expected=0)
    assert registry.ready
    server = DrainingServer(uvicorn.Config(app=FastAPI()), registry)
    server.handle_exit(signal.SIGTERM, None)
    assert registry.draining and not registry.ready and server.should_exit
    assert signal.SIGTERM not in server._captured_signals  # uvicorn would re-raise it


def test_json_logs_carry_the_request_id() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "served %s", ("it",), None)
    context = contextvars.copy_context()
    context.run(logs.request_id.set, "rq-42")
    line = json.loads(context.run(logs.JsonFormatter().format, record))
    assert line["request_id"] == "rq-42" and line["message"] == "served it"
    assert "request_id" not in json.loads(logs.JsonFormatter().format(record))


@pytest.mark.parametrize("text", ["naïve 東京", "bad \udcff byte"])
def test_json_logs_keep_any_text_on_one_parseable_line(text: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", (text,), None)
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line and json.loads(line)["message"] == f"got {text}"

"""The short path for JSON routes (service/front/http/json_routes.py): which routes it takes, that
well-formed requests skip FastAPI's request handling, and that every answer, good or bad, is
the one FastAPI gives for the same request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.middleware import Middleware

from service.app import ROUTERS
from service.front.http.json_routes import JsonRoutes, json_routes
from service.front.routes import dense as dense_router
from tests.conftest import metric, serving

MODEL = "tiny/dense"
# Headers that differ between any two requests.
PER_REQUEST = {"x-request-id", "date", "content-length"}


def test_the_routes_taken_are_the_post_routes_with_a_json_body() -> None:
    assert set(json_routes(ROUTERS)) == {
        "/v1/embeddings",
        "/embed/dense",
        "/embed/sparse",
        "/embed/hybrid",
        "/embed/late",
        "/score/maxsim",
        "/rerank",
        "/v1/rerank",
        "/v1/embed",  # Cohere
        "/v2/embed",
        "/v2/rerank",
        "/",  # TEI
        "/embed",
        "/embed_sparse",
        "/embed_all",
        "/tokenize",
        "/decode",
    }  # not /embed/image and /embed/multimodal (multipart or JSON, read by the route)


@contextmanager
def app_client(directory: Path, short_path: bool = True) -> Iterator[tuple[TestClient, list[str]]]:
    """The app on the tiny model, and the paths of the requests that reached FastAPI's own
    handling (counted innermost, where the short path passes requests on); without the
    short path, FastAPI serves every request. The middleware stack is rebuilt on the next
    request."""
    passed: list[str] = []

    class Passed:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            passed.append(scope["path"])
            await self.app(scope, receive, send)

    with serving(models=[str(directory)]) as client:
        app: Any = client.app
        if not short_path:
            app.user_middleware = [m for m in app.user_middleware if m.cls is not JsonRoutes]
        app.user_middleware.append(Middleware(Passed))
        app.middleware_stack = None
        yield client, passed


def test_well_formed_requests_skip_fastapis_handling(
    tiny_dense: tuple[Path, np.ndarray],
) -> None:
    with app_client(tiny_dense[0]) as (client, handled):
        response = client.post("/v1/embeddings", json={"input": "hello world", "model": MODEL})
        assert response.status_code == 200
        vector = np.array(response.json()["data"][0]["embedding"], dtype=np.float32)
        assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-6)
        assert client.post("/embed/dense", json={"inputs": ["cat"]}).status_code == 200
        assert handled == []
        # a malformed body, another content type and a GET go through FastAPI
        assert client.post("/v1/embeddings", json={"input": 5}).status_code == 400
        text = {"content-type": "text/plain"}
        assert (
            client.post("/embed/dense", content=b'{"inputs": []}', headers=text).status_code == 400
        )
        assert client.get("/models").status_code == 200
        assert handled == ["/v1/embeddings", "/embed/dense", "/models"]


def test_requests_are_counted_under_their_route(tiny_client: TestClient) -> None:
    line = 'embed_requests_total{model="tiny/dense",route="/v1/embeddings",status="200"}'
    before = metric(tiny_client, line)
    for _ in range(3):
        tiny_client.post("/v1/embeddings", json={"input": "the cat", "model": MODEL})
    assert metric(tiny_client, line) - before == 3.0


JSON = {"content-type": "application/json"}
UTF8 = {"content-type": "application/json; charset=utf-8"}
# (path, body, headers, status, whether the short path answers)
CASES: list[tuple[str, bytes, dict[str, str], int, bool]] = [
    # served
    ("/v1/embeddings", b'{"input": "hello world", "model": "tiny/dense"}', JSON, 200, True),
    (
        "/v1/embeddings",
        b'{"input": ["cat", "dog"], "model": "dense", "encoding_format": "base64"}',
        JSON,
        200,
        True,
    ),
    (
        "/v1/embeddings",
        b'{"input": [[7, 8, 9]], "model": "dense", "dimensions": 3}',
        JSON,
        400,  # token ids are refused unless EMBED_TOKEN_ID_INPUTS=true
        True,
    ),
    (
        "/v1/embeddings",
        b'{"input": "cat", "model": "dense", "dimensions": "4", "extra": 1}',
        JSON,
        200,
        True,
    ),
    (
        "/embed/dense",
        b'{"inputs": "the cat", "input_type": "query", "normalize": false}',
        JSON,
        200,
        True,
    ),
    ("/embed/dense", b'{"inputs": ["cat"]}', UTF8, 200, True),
    ("/embed/dense", b'{"inputs": ["cat"], "inputs": ["dog"]}', JSON, 200, True),
    ("/embed/dense", '{"inputs": ["cat"]}'.encode("utf-16"), JSON, 200, False),  # FastAPI reads it
    # errors the route raises
    ("/v1/embeddings", b'{"input": [], "model": "tiny/dense"}', JSON, 400, True),
    ("/v1/embeddings", b'{"input": "cat", "model": "no/such-model"}', JSON, 404, True),
    (
        "/v1/embeddings",
        b'{"input": "cat", "model": "tiny/dense", "dimensions": 0}',
        JSON,
        400,
        True,
    ),
    ("/embed/dense", b'{"inputs": [""]}', JSON, 400, True),
    ("/embed/sparse", b'{"inputs": ["cat"]}', JSON, 404, True),
    ("/rerank", b'{"query": "cat", "documents": ["a", "b"]}', JSON, 404, True),
    # bodies that do not validate or parse, or are not declared JSON
    ("/v1/embeddings", b'{"input": 5, "model": "tiny/dense"}', JSON, 400, False),
    (
        "/v1/embeddings",
        b'{"input": "cat", "model": "dense", "dimensions": "four"}',
        JSON,
        400,
        False,
    ),
    ("/embed/dense", b'{"inputs": ["cat"], "unknown": 1}', JSON, 400, False),
    ("/embed/dense", b"{}", JSON, 400, False),
    ("/embed/dense", b"[]", JSON, 400, False),
    ("/embed/dense", b"null", JSON, 400, False),
    ("/embed/dense", b"{not json", JSON, 400, False),
    ("/embed/dense", b"", JSON, 400, False),
    ("/embed/dense", b'{"inputs": ["cat"], "dimensions": NaN}', JSON, 400, False),
    (
        "/embed/dense",
        b'{"inputs": ["cat"], "dimensions": 123456789012345678901234567890}',
        JSON,
        400,
        False,
    ),
    ("/embed/dense", b'{"inputs": ["cat"]}', {}, 400, False),
    ("/embed/dense", b'{"inputs": ["cat"]}', {"content-type": "text/plain"}, 400, False),
]


def _answer(client: TestClient, path: str, body: bytes, headers: dict[str, str]) -> Any:
    response = client.post(path, content=body, headers=headers)
    kept = {k: v for k, v in response.headers.items() if k not in PER_REQUEST}
    kept = {k: v for k, v in kept.items() if not k.endswith("-time-ms")}
    return response.status_code, kept, response.content


def test_every_answer_is_the_one_fastapi_gives(tiny_dense: tuple[Path, np.ndarray]) -> None:
    directory, _ = tiny_dense
    with (
        app_client(directory) as (short, passed_short),
        app_client(directory, short_path=False) as (full, passed_full),
    ):
        for path, body, headers, status, answered_short in CASES:
            before = len(passed_short), len(passed_full)
            ours = _answer(short, path, body, headers)
            assert ours[0] == status, (path, body, headers, ours)
            assert ours == _answer(full, path, body, headers), (path, body, headers)
            reached_fastapi = (len(passed_short) - before[0], len(passed_full) - before[1])
            assert reached_fastapi == (0 if answered_short else 1, 1), (path, body, headers)


def test_an_unexpected_error_is_a_500_with_the_request_id(
    tiny_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(dense_router, "embed", broken)
    response = tiny_client.post(
        "/v1/embeddings", json={"input": "cat", "model": MODEL}, headers={"x-request-id": "r-1"}
    )
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "r-1"
    assert response.json()["error"]["message"] == "internal server error (request id r-1)"
    assert "boom" not in response.text

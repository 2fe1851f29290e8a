"""/embed/dense and /v1/embeddings against the tiny dense model, whose vectors are exact."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests import tiny_models
from tests.conftest import metric, serving
from tests.envelope import error_of

MODEL = "tiny/dense"


def vectors(response_json: dict) -> np.ndarray:
    return np.array([d["embedding"] for d in response_json["data"]], dtype=np.float32)


def test_openai_route_returns_exact_mean_pooled_unit_vectors(
    tiny_client: TestClient, tiny_dense
) -> None:
    _, table = tiny_dense
    texts = ["hello world", "the cat sat on the mat", "unknown words here"]
    response = tiny_client.post("/v1/embeddings", json={"input": texts, "model": MODEL})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    expected = np.stack([tiny_models.expected_dense(table, t) for t in texts])
    np.testing.assert_allclose(vectors(body), expected, atol=1e-6)
    # true token counts: words + [CLS] + [SEP]
    assert body["usage"] == {"prompt_tokens": 4 + 8 + 5, "total_tokens": 17}


def test_single_string_and_short_model_name(tiny_client: TestClient, tiny_dense) -> None:
    _, table = tiny_dense
    response = tiny_client.post("/v1/embeddings", json={"input": "hello", "model": "dense"})
    assert response.status_code == 200
    np.testing.assert_allclose(
        vectors(response.json())[0], tiny_models.expected_dense(table, "hello"), atol=1e-6
    )


def test_base64_encoding_is_little_endian_float32(tiny_client: TestClient, tiny_dense) -> None:
    _, table = tiny_dense
    body = tiny_client.post(
        "/v1/embeddings", json={"input": ["red cat"], "model": MODEL, "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, tiny_models.expected_dense(table, "red cat"), atol=1e-6)


def test_json_floats_read_back_as_the_same_float32_as_base64(tiny_client: TestClient) -> None:
    """JSON writes each float32 as its shortest decimal: parsed and cast to float32 it is
    bit-for-bit the value that base64 carries, also for a `dimensions` slice of the vector."""
    for extra in ({}, {"dimensions": 5}):
        request = {"input": ["red cat", "the blue dog sat"], "model": MODEL, **extra}
        as_json = tiny_client.post("/v1/embeddings", json=request)
        as_base64 = tiny_client.post(
            "/v1/embeddings", json={**request, "encoding_format": "base64"}
        ).json()
        exact = np.stack(
            [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in as_base64["data"]]
        )
        assert exact.shape == (2, extra.get("dimensions", 8))
        assert np.array_equal(vectors(as_json.json()), exact)
        # float32 needs at most 9 significant digits, where a float64's repr takes up to 17
        arrays = re.findall(r'"embedding":\[([^\]]*)\]', as_json.text)
        numbers = [n for array in arrays for n in array.split(",")]
        assert len(numbers) == exact.size
        digits = [
            len(n.split("e")[0].replace("-", "").replace(".", "").lstrip("0")) for n in numbers
        ]
        assert max(digits) <= 9


def test_dimensions_keeps_first_components_renormalised(
    tiny_client: TestClient, tiny_dense
) -> None:
    _, table = tiny_dense
    body = tiny_client.post(
        "/v1/embeddings", json={"input": "blue dog", "model": MODEL, "dimensions": 3}
    ).json()
    full = tiny_models.expected_dense(table, "blue dog")
    got = vectors(body)[0]
    assert got.shape == (3,)
    np.testing.assert_allclose(got, full[:3] / np.linalg.norm(full[:3]), atol=1e-6)


def test_token_id_inputs_get_the_models_special_tokens(tiny_dense) -> None:
    directory, table = tiny_dense
    vocab = tiny_models.vocabulary()
    ids = [vocab["hello"], vocab["world"]]
    with serving(models=[str(directory)], token_id_inputs=True) as client:
        for payload in (ids, [ids]):
            body = client.post("/v1/embeddings", json={"input": payload, "model": MODEL}).json()
            np.testing.assert_allclose(
                vectors(body)[0], tiny_models.expected_dense(table, "hello world"), atol=1e-6
            )
            assert body["usage"]["prompt_tokens"] == 4
        for payload in ([[]], [[10**9]]):
            response = client.post("/v1/embeddings", json={"input": payload, "model": MODEL})
            assert error_of(response, 400)["code"] == "invalid_input"


def test_token_ids_are_refused_by_default_naming_the_fixes(tiny_client: TestClient) -> None:
    vocab = tiny_models.vocabulary()
    for payload in ([vocab["hello"]], [[vocab["hello"]]], [[10**9]]):
        for model in (MODEL, "text-embedding-ada-002"):  # LangChain's default model too
            response = tiny_client.post("/v1/embeddings", json={"input": payload, "model": model})
            error = error_of(response, 400)
            assert error["code"] == "token_ids_refused" and error["param"] == "input"
            assert "check_embedding_ctx_length=False" in error["message"]
            assert "EMBED_TOKEN_ID_INPUTS=true" in error["message"]


def test_native_route_prefixes_and_raw_vectors(tiny_client: TestClient, tiny_dense) -> None:
    _, table = tiny_dense
    for input_type, prefix in (("query", "query: "), ("document", "passage: "), (None, "")):
        body = tiny_client.post(
            "/embed/dense",
            json={"inputs": ["fast cat"], "input_type": input_type, "normalize": False},
        ).json()
        expected = tiny_models.expected_dense(table, "fast cat", prefix=prefix, normalize=False)
        np.testing.assert_allclose(body["embeddings"][0], expected, atol=1e-6)
        assert body["dim"] == tiny_models.DIM and body["model"] == MODEL


def test_tokenizer_fixed_padding_is_overridden(tiny_client: TestClient, tiny_dense) -> None:
    """The saved tokenizer pads and truncates at 12; the service pads per batch and cuts at 16."""
    _, table = tiny_dense
    long_text = " ".join(["one", "two", "three"] * 5)  # 15 words -> 14 kept + 2 specials
    body = tiny_client.post("/embed/dense", json={"inputs": [long_text, "cat"]}).json()
    assert body["usage"]["prompt_tokens"] == 16 + 3
    np.testing.assert_allclose(
        body["embeddings"][0], tiny_models.expected_dense(table, long_text), atol=1e-6
    )


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        ({"input": "hi", "model": "no/such-model"}, 404, "model_not_found", "model"),
        ({"input": [], "model": MODEL}, 400, "invalid_input", "input"),
        ({"input": "", "model": MODEL}, 400, "invalid_input", "input"),
        ({"input": 42, "model": MODEL}, 400, "invalid_request", "input"),
        ({"input": [1, "a"], "model": MODEL}, 400, "invalid_request", "input"),
        ({"model": MODEL}, 400, "invalid_request", "input"),
        ({"input": "hi"}, 400, "invalid_request", "model"),
        (
            {"input": "hi", "model": MODEL, "encoding_format": "int8"},
            400,
            "invalid_request",
            "encoding_format",
        ),
        ({"input": "hi", "model": MODEL, "dimensions": 9}, 400, "invalid_input", "dimensions"),
        ({"input": "hi", "model": MODEL, "dimensions": 0}, 400, "invalid_input", "dimensions"),
    ],
)
def test_openai_errors_use_the_envelope(
    tiny_client: TestClient, payload, status, code, param
) -> None:
    response = tiny_client.post("/v1/embeddings", json=payload)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code and error["param"] == param
    assert "Traceback" not in error["message"]


def test_malformed_json_is_400(tiny_client: TestClient) -> None:
    response = tiny_client.post(
        "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


def test_over_long_input_refused_with_413_when_truncation_is_off(tiny_dense) -> None:
    directory, _ = tiny_dense
    long_text = " ".join(["cat"] * 20)
    with serving(models=[str(directory)], truncate=False, token_id_inputs=True) as client:
        response = client.post("/v1/embeddings", json={"input": long_text, "model": MODEL})
        assert response.status_code == 413
        error = error_of(response)
        assert "16 tokens" in error["message"] and error["code"] == "input_too_long"
        ids = [5] * 15
        response = client.post("/v1/embeddings", json={"input": [ids], "model": MODEL})
        assert response.status_code == 413 and "16 tokens" in error_of(response)["message"]
        # a request may still ask for truncation on the native route
        ok = client.post("/embed/dense", json={"inputs": long_text, "truncate": True})
        assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 16


def test_limits_on_inputs_and_characters(tiny_dense) -> None:
    directory, _ = tiny_dense
    with serving(models=[str(directory)], max_inputs_per_request=2, max_input_chars=10) as client:
        response = client.post("/embed/dense", json={"inputs": ["a", "b", "c"]})
        assert response.status_code == 400 and "limit is 2" in error_of(response)["message"]
        response = client.post("/embed/dense", json={"inputs": ["x" * 11]})
        assert response.status_code == 413 and "limit is 10" in error_of(response)["message"]


def test_models_listings(tiny_client: TestClient) -> None:
    listing = tiny_client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert listing["data"][0]["id"] == MODEL and listing["data"][0]["object"] == "model"
    models = tiny_client.get("/models").json()["models"]
    assert models[0] | {} == models[0]
    assert (models[0]["kind"], models[0]["dim"], models[0]["max_tokens"], models[0]["pooling"]) == (
        "dense",
        tiny_models.DIM,
        tiny_models.MAX_LENGTH,
        "mean",
    )


def test_health_ready_and_metrics(tiny_client: TestClient) -> None:
    assert tiny_client.get("/health").json() == {"status": "ok"}
    ready = tiny_client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    served = 'embed_requests_total{model="tiny/dense",route="/v1/embeddings",status="200"}'
    missing = 'embed_requests_total{model="",route="/v1/embeddings",status="404"}'
    before = metric(tiny_client, served), metric(tiny_client, missing)
    tiny_client.post("/v1/embeddings", json={"input": "hello", "model": MODEL})
    tiny_client.post("/v1/embeddings", json={"input": "hello", "model": "missing"})
    after = metric(tiny_client, served), metric(tiny_client, missing)
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)
    text = tiny_client.get("/metrics").text
    assert 'embed_request_duration_seconds_bucket{le="0.001",model="tiny/dense"' in text
    assert "embed_inference_seconds_count" in text and "embed_batch_size_bucket" in text


def test_queue_wait_is_observed_once_per_request_and_batch_size_per_input(
    tiny_client: TestClient,
) -> None:
    def totals() -> tuple[float, float]:
        text = tiny_client.get("/metrics").text
        found = [
            re.search(rf'^embed_{name}\{{model="tiny/dense"\}} (\S+)$', text, re.M)
            for name in ("queue_wait_seconds_count", "batch_size_sum")
        ]
        waits, inputs = (float(match[1]) if match else 0.0 for match in found)
        return waits, inputs

    before = totals()
    body = {"input": ["a", "b c", "d e f", "g", "h i"], "model": MODEL}
    assert tiny_client.post("/v1/embeddings", json=body).status_code == 200
    after = totals()
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 5.0)


def test_ready_is_503_with_reason_when_a_model_cannot_load(tmp_path: Path) -> None:
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(models=[str(tmp_path / "nowhere")]))
    with TestClient(app) as client:
        for _ in range(200):
            body = client.get("/ready").json()
            if body.get("reason"):
                break
        response = client.get("/ready")
        assert response.status_code == 503
        assert "nowhere" in response.json()["reason"]
        served = client.post("/v1/embeddings", json={"input": "x", "model": "x"})
        assert served.status_code == 503 and error_of(served)["code"] == "not_ready"


def test_request_id_is_echoed_or_made(tiny_client: TestClient) -> None:
    given = tiny_client.get("/health", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = tiny_client.get("/health")
    assert len(made.headers["x-request-id"]) == 32

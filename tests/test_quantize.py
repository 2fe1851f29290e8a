"""Quantised outputs (service/front/serving/quantize.py): the same values as sentence-transformers'
quantize_embeddings, on /embed/dense with the tiny dense model calibrated by the converter's
own calibration command."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sentence_transformers.util.quantization import quantize_embeddings

from service.convert import calibration
from service.front.serving.quantize import pack_bits, scale_bytes
from tests import tiny_models
from tests.conftest import serving
from tests.envelope import error_of

TEXTS = ["hello world", "the cat sat on the mat", "blue dog", "fast red fox jumps"]


def test_bits_and_bytes_are_sentence_transformers_quantize_embeddings() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(50, 21)).astype(np.float32)
    calibration_set = rng.normal(size=(200, 21)).astype(np.float32)
    low, high = calibration_set.min(axis=0), calibration_set.max(axis=0)
    ranges = np.vstack([low, high])
    for precision in ("int8", "uint8"):
        expected = quantize_embeddings(vectors, precision=precision, ranges=ranges)
        got = scale_bytes(vectors, low, high, signed=precision == "int8")
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    for precision in ("binary", "ubinary"):
        expected = quantize_embeddings(vectors, precision=precision)
        got = pack_bits(vectors, signed=precision == "binary")
        assert got.dtype == expected.dtype and got.shape == (50, 3)
        np.testing.assert_array_equal(got, expected)


def test_dimension_zero_is_the_high_bit_of_the_first_byte() -> None:
    vector = np.array([[1, -1, -1, -1, -1, -1, -1, 1, 0.5]], dtype=np.float32)
    assert pack_bits(vector, signed=False).tolist() == [[0b10000001, 0b10000000]]
    assert pack_bits(vector, signed=True).tolist() == [[129 - 128, 128 - 128]]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    directory = tmp_path_factory.mktemp("tiny-calibrated")
    table = tiny_models.build_dense_model(directory)
    texts = directory / "texts.txt"
    texts.write_text("\n".join([*TEXTS, "red sky", "one two three"]))
    assert calibration.main([str(directory), "--texts", str(texts)]) == 0
    return directory, table


@pytest.fixture(scope="module")
def client(
    calibrated: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    plain = tmp_path_factory.mktemp("tiny-plain")
    shutil.copytree(calibrated[0], plain, dirs_exist_ok=True)
    metadata = json.loads((plain / "service_model.json").read_text())
    metadata["spec"]["name"] = "tiny/plain"
    del metadata["calibration"]
    (plain / "service_model.json").write_text(json.dumps(metadata))
    with serving(models=[str(calibrated[0]), str(plain)]) as test_client:
        yield test_client


def recorded_ranges(directory: Path) -> np.ndarray:
    found = json.loads((directory / "service_model.json").read_text())["calibration"]
    return np.vstack([found["min"], found["max"]]).astype(np.float32)


def test_calibration_records_the_served_vectors_ranges(calibrated: tuple[Path, np.ndarray]) -> None:
    directory, table = calibrated
    found = json.loads((directory / "service_model.json").read_text())["calibration"]
    texts = [*calibration.CHECK_TEXTS, *TEXTS, "red sky", "one two three"]
    served = np.stack([tiny_models.expected_dense(table, text) for text in texts])
    assert found["texts"] == len(texts)
    np.testing.assert_allclose(found["min"], served.min(axis=0), atol=1e-6)
    np.testing.assert_allclose(found["max"], served.max(axis=0), atol=1e-6)


def dense(client: TestClient, **fields: object) -> dict:
    response = client.post("/embed/dense", json={"inputs": TEXTS, "model": "tiny/dense", **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("embedding_type", ["int8", "uint8", "binary", "ubinary"])
def test_embed_dense_quantises_its_float_vectors(
    client: TestClient, calibrated: tuple[Path, np.ndarray], embedding_type: str
) -> None:
    floats = np.array(dense(client)["embeddings"], dtype=np.float32)
    body = dense(client, embedding_type=embedding_type)
    ranges = recorded_ranges(calibrated[0]) if embedding_type.endswith("int8") else None
    expected = quantize_embeddings(floats, precision=embedding_type, ranges=ranges)
    assert body["embeddings"] == expected.tolist()
    assert body["dim"] == tiny_models.DIM
    encoded = dense(client, embedding_type=embedding_type, encoding_format="base64")
    decoded = [
        np.frombuffer(base64.b64decode(e), dtype=expected.dtype) for e in encoded["embeddings"]
    ]
    np.testing.assert_array_equal(np.stack(decoded), expected)


def test_binary_takes_truncated_dimensions(client: TestClient) -> None:
    floats = np.array(dense(client, dimensions=5)["embeddings"], dtype=np.float32)
    body = dense(client, dimensions=5, embedding_type="ubinary")
    assert body["embeddings"] == np.packbits(floats > 0, axis=-1).tolist()


def test_int8_refuses_what_its_ranges_do_not_describe(client: TestClient) -> None:
    for fields in ({"dimensions": 4}, {"normalize": False}):
        response = client.post(
            "/embed/dense", json={"inputs": TEXTS, "embedding_type": "int8", **fields}
        )
        error = error_of(response, 400)
        assert error["param"] == "embedding_type" and "calibrated" in error["message"]
    same = dense(client, embedding_type="uint8", normalize=True)  # the model's own
    assert len(same["embeddings"]) == len(TEXTS)


def test_a_directory_without_ranges_names_the_fix(client: TestClient) -> None:
    response = client.post(
        "/embed/dense", json={"inputs": TEXTS, "model": "tiny/plain", "embedding_type": "int8"}
    )
    error = error_of(response, 400)
    assert error["code"] == "not_calibrated"
    assert "python -m service.convert.calibration" in error["message"]
    ok = client.post(
        "/embed/dense", json={"inputs": TEXTS, "model": "tiny/plain", "embedding_type": "binary"}
    )
    assert ok.status_code == 200

"""Quantised outputs (service/front/serving/quantize.py): binary and ubinary are
sentence-transformers' quantize_embeddings; int8 and uint8 one scale for every dimension (zero
at zero), so they keep the float vectors' angles; on /embed/dense with the tiny dense model
calibrated by the converter's own calibration command."""

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
from service.front.serving.quantize import pack_bits, scale_bytes, shared_scale
from tests import tiny_models
from tests.conftest import serving
from tests.envelope import error_of
from tests.int8_reference import (
    assert_matches,
    int8_reference,
    quantized_reference,
    recorded_abs_max,
)

TEXTS = ["hello world", "the cat sat on the mat", "blue dog", "fast red fox jumps"]


def test_int8_is_one_scale_for_every_dimension_with_zero_at_zero() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(50, 21)).astype(np.float32)
    vectors[:, 3] *= 8  # a wide dimension scales no differently from the others
    vectors[0, :5] = 0.0
    abs_max = float(np.abs(vectors).max()) * 0.9  # some values clip
    scale = shared_scale({"abs_max": abs_max, "min": [], "max": []})
    got = scale_bytes(vectors, scale, signed=True)
    expected = int8_reference(vectors, abs_max)
    assert got.dtype == np.int8 and np.abs(got.astype(int) - expected).max() <= 1  # float32 ties
    assert (got == expected).mean() > 0.99 and got[0, :5].tolist() == [0] * 5
    assert got.min() == -127 and got.max() == 127
    unsigned = scale_bytes(vectors, scale, signed=False)
    assert unsigned.dtype == np.uint8
    np.testing.assert_array_equal(unsigned.astype(int), got.astype(int) + 128)


def test_int8_keeps_the_angles_of_normalised_vectors() -> None:
    rng = np.random.default_rng(8)
    vectors = rng.normal(size=(200, 384)) * rng.uniform(0.2, 3, size=384)  # uneven dimensions
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    levels = scale_bytes(vectors, float(np.abs(vectors).max()) / 127, signed=True).astype(float)
    cosine = (levels * vectors).sum(1) / np.linalg.norm(levels, axis=1)
    assert cosine.min() > 0.99


def test_a_recorded_range_without_abs_max_gives_the_scale_from_the_per_dimension_ranges() -> None:
    assert shared_scale({"min": [-0.5, -0.1], "max": [0.2, 0.635]}) == 0.635 / 127


def test_bits_are_sentence_transformers_quantize_embeddings() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(50, 21)).astype(np.float32)
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


def test_calibration_records_the_served_vectors_ranges(calibrated: tuple[Path, np.ndarray]) -> None:
    directory, table = calibrated
    found = json.loads((directory / "service_model.json").read_text())["calibration"]
    texts = [*calibration.CHECK_TEXTS, *TEXTS, "red sky", "one two three"]
    served = np.stack([tiny_models.expected_dense(table, text) for text in texts])
    assert found["texts"] == len(texts)
    np.testing.assert_allclose(found["min"], served.min(axis=0), atol=1e-6)
    np.testing.assert_allclose(found["max"], served.max(axis=0), atol=1e-6)
    assert found["abs_max"] == pytest.approx(np.abs(served).max(), abs=1e-6)


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
    if embedding_type.endswith("int8"):
        abs_max = recorded_abs_max(calibrated[0])
        expected = quantized_reference(floats, abs_max, embedding_type)
        assert_matches(body["embeddings"], expected)
    else:
        expected = quantize_embeddings(floats, precision=embedding_type)
        assert body["embeddings"] == expected.tolist()
    assert body["dim"] == tiny_models.DIM
    encoded = dense(client, embedding_type=embedding_type, encoding_format="base64")
    decoded = [
        np.frombuffer(base64.b64decode(e), dtype=expected.dtype) for e in encoded["embeddings"]
    ]
    np.testing.assert_array_equal(np.stack(decoded), np.array(body["embeddings"]))


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

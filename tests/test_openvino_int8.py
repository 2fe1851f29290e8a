"""The openvino-int8 graph variant (service/convert/openvino_int8.py): NNCF's static int8 as
OpenVINO IR, written by the converter, checked against fp32 and recorded, served by OpenVINO
(service/engine/openvino_runner.py) with its check in /models. Its batch invariance is in
tests/test_batch_invariance.py; its speed and recall in make bench and make recall."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.convert import openvino_int8 as ov_int8
from service.convert.export import export
from service.convert.plan import ExportRequest
from service.engine import openvino_runner
from service.errors import ModelLoadError
from service.models.store import EXACT_COSINE
from tests import scale_models
from tests.conftest import serving
from tests.exporting import EXPORT_WARNINGS

pytestmark = EXPORT_WARNINGS
TEXTS = ["hello world", "the cat sat on the mat .", "a", "one two three four five six seven"]
CALIBRATION = [f"{a} {b} and the {c}" for a in TEXTS for b in ("red", "dog") for c in TEXTS]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = scale_models.build_tiny_bert(tmp_path_factory.mktemp("ov-bert"))
    out = tmp_path_factory.mktemp("ov-bert-out")
    export(
        ExportRequest(source, out, name="tiny/bert", openvino_int8=True, check_texts=CALIBRATION)
    )
    return out


def fp32_vectors(directory: Path, texts: list[str]) -> np.ndarray:
    """The service's vectors from the fp32 graph (ONNX Runtime)."""
    with serving(models=[f"{directory}:fp32"]) as fp32:
        response = fp32.post("/embed/dense", json={"inputs": texts, "model": "tiny/bert"})
        assert fp32.get("/models").json()["models"][0]["provider"] == "CPUExecutionProvider"
    return np.array(response.json()["embeddings"])


def test_the_converter_writes_the_ir_and_records_its_check(converted: Path) -> None:
    recorded = json.loads((converted / "service_model.json").read_text())
    assert recorded["variants"]["openvino-int8"] == "model.ov-int8.xml"
    assert (converted / "model.ov-int8.xml").is_file() and (
        converted / "model.ov-int8.bin"
    ).is_file()
    check = recorded["checks"]["openvino-int8"]
    assert check["texts"] == 20 + len(CALIBRATION)
    assert 0.99 <= check["min_cosine"] <= check["mean_cosine"] <= 1.0
    assert check["detail"]["calibration_texts"] == check["texts"]  # one text a sample
    assert check["detail"]["smooth_quant_alpha"] == ov_int8.DEFAULT_OPTIONS.smooth_quant_alpha
    assert recorded["default_cpu"] == "fp32"  # int8 is never the default
    # it really is int8: the IR holds int8 weights and quantise-dequantise nodes
    xml = (converted / "model.ov-int8.xml").read_text()
    assert 'element_type="i8"' in xml and "FakeQuantize" in xml


def test_layers_kept_in_fp32_are_found_by_shape(converted: Path) -> None:
    import openvino as ov

    model = ov.Core().read_model(str(converted / "model.onnx"))
    weighted, activations = ov_int8.matmuls(model)
    assert len(weighted) == 12 and len(activations) == 4  # 2 layers: 6 weighted, 2 of attention
    down = ov_int8.keep_fp32(model, "down")
    assert down == [name for name, k, n in weighted if "output/dense" in name and k > n]
    assert len(down) == 2
    assert ov_int8.keep_fp32(model, "down+attention") == down + activations
    with pytest.raises(ValueError, match="keep_fp32"):
        ov_int8.keep_fp32(model, "everything")


@pytest.fixture(scope="module")
def client(converted: Path) -> Iterator[Any]:
    with serving(models=[f"{converted}:openvino-int8"]) as test_client:
        yield test_client


def test_served_by_openvino_close_to_fp32_with_its_check_in_models(
    client: Any, converted: Path
) -> None:
    described = client.get("/models").json()["models"][0]
    assert described["variant"] == "openvino-int8" and described["provider"] == "OpenVINO CPU"
    recorded = json.loads((converted / "service_model.json").read_text())["checks"]
    exact = recorded["openvino-int8"]["min_cosine"] >= EXACT_COSINE
    assert described["exact"] is exact
    assert described["batch_invariant"] is False  # padded wider, some inputs move
    assert described["variant_check"]["min_cosine"] == recorded["openvino-int8"]["min_cosine"]
    assert described["variant_check"]["mean_cosine"] == recorded["openvino-int8"]["mean_cosine"]
    response = client.post("/embed/dense", json={"inputs": TEXTS, "model": "tiny/bert"})
    assert response.status_code == 200, response.text
    got = np.array(response.json()["embeddings"])
    expected = fp32_vectors(converted, TEXTS)
    cosine = (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.99
    assert not np.allclose(got, expected, atol=1e-6)  # another graph, not fp32 again


def test_without_openvino_an_ir_graph_names_the_extra(
    converted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    openvino_runner.core.cache_clear()
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    try:
        with pytest.raises(ModelLoadError, match=r"openvino is not installed.*\[openvino\]"):
            openvino_runner.OpenVinoRunner(converted / "model.ov-int8.xml", threads=1)
    finally:
        openvino_runner.core.cache_clear()

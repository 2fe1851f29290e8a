"""The converter's dense default: pooling inside the graph, one (batch, dim) output checked
against PyTorch (each input run alone, pooled in numpy), served as is by the service; and
the fp16 variant checked against fp32 and recorded in the model directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.convert.export import export
from service.convert.plan import ExportRequest
from service.models.text import load_text_encoder
from tests import scale_models
from tests.conftest import serving
from tests.exporting import EXPORT_WARNINGS

pytestmark = EXPORT_WARNINGS
TEXTS = ["hello world", "the cat sat on the mat .", "a", "one two three four five six seven"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scale_models.build_tiny_bert(tmp_path_factory.mktemp("scale-bert"))


def token_ids(directory: Path) -> list[list[int]]:
    encoder = load_text_encoder(directory, 16)
    return [e.ids for e in encoder.tokenizer.encode_batch(TEXTS)]


def padded_feeds(ids: list[list[int]]) -> dict[str, np.ndarray]:
    width = max(map(len, ids))
    feeds = {
        "input_ids": np.zeros((len(ids), width), dtype=np.int64),
        "attention_mask": np.zeros((len(ids), width), dtype=np.int64),
    }
    for row, item in enumerate(ids):
        feeds["input_ids"][row, : len(item)] = item
        feeds["attention_mask"][row, : len(item)] = 1
    feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    return feeds


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_dense_export_pools_in_the_graph_like_pytorch(
    tiny_bert: Path, tmp_path: Path, pooling: str
) -> None:
    out = tmp_path / pooling
    metadata = export(ExportRequest(tiny_bert, out, name="tiny/bert", pooling=pooling))
    assert metadata["export"]["outputs"] == ["sentence_embedding"]
    assert metadata["spec"]["pooling"] == pooling and metadata["spec"]["dim"] == 16
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = token_ids(out)
    feeds = padded_feeds(ids)  # rows of different lengths: pooling must respect the mask
    got = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    expected = scale_models.reference_pooled(scale_models.token_states(tiny_bert, ids), pooling)
    assert got.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_the_service_serves_the_pooled_graph_raw_and_normalised(
    tiny_bert: Path, tmp_path: Path
) -> None:
    out = tmp_path / "served"
    export(ExportRequest(tiny_bert, out, name="tiny/bert"))
    expected = scale_models.reference_pooled(
        scale_models.token_states(tiny_bert, token_ids(out)), "mean"
    )
    with serving(models=[str(out)]) as client:
        raw = client.post("/embed/dense", json={"inputs": TEXTS, "normalize": False})
        unit = client.post("/v1/embeddings", json={"input": TEXTS, "model": "tiny/bert"})
    assert raw.status_code == 200 and unit.status_code == 200, raw.text + unit.text
    np.testing.assert_allclose(np.array(raw.json()["embeddings"]), expected, atol=2e-5)
    got = np.array([d["embedding"] for d in unit.json()["data"]])
    normalised = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, normalised, atol=2e-5)


def test_token_outputs_on_request(tiny_bert: Path, tmp_path: Path) -> None:
    metadata = export(ExportRequest(tiny_bert, tmp_path / "tok", token_outputs=True))
    assert metadata["export"]["outputs"] == ["last_hidden_state"]


def test_fp16_variant_is_checked_against_fp32_and_recorded(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp16"
    export(ExportRequest(tiny_bert, out, name="tiny/bert", fp16=True))
    recorded = json.loads((out / "service_model.json").read_text())
    assert recorded["variants"]["fp16"] == "model.fp16.onnx"
    check = recorded["checks"]["fp16"]
    assert check["texts"] >= 20 and 0.999 <= check["min_cosine"] <= 1.0
    assert recorded["default_gpu"] == "fp16"
    # Our own check of the recorded figure, on the pooled outputs of both graphs.
    feeds = padded_feeds(token_ids(out))
    outputs = []
    for name in ("model.onnx", "model.fp16.onnx"):
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0])
    a, b = outputs
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.999
    assert not np.array_equal(a, b)  # it really is another graph

"""The int8 variant: SmoothQuant-style migration that leaves the float graph's outputs
unchanged, then dynamic int8 of every weighted node but the feed-forward down-projections,
checked against fp32 and recorded by the converter."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.convert.export import ExportRequest, export
from service.convert.smoothing import channel_ranges, smooth, weighted_nodes
from service.convert.variants import CHECK_TEXTS, check_batches, graph_inputs, sensitive_nodes
from tests import scale_models
from tests.exporting import EXPORT_WARNINGS

pytestmark = EXPORT_WARNINGS


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = scale_models.build_tiny_bert(tmp_path_factory.mktemp("int8-bert"))
    out = tmp_path_factory.mktemp("int8-out")
    export(ExportRequest(source, out, name="tiny/bert", optimize=True, int8=True))
    return out


def feeds(directory: Path) -> list[dict[str, np.ndarray]]:
    names = graph_inputs(directory / "model.opt.onnx")
    return check_batches(directory, names, CHECK_TEXTS, size=8, max_length=16)


def test_smoothing_keeps_outputs_and_evens_activation_and_weight_ranges(converted: Path) -> None:
    graph = converted / "model.opt.onnx"
    skip = set(sensitive_nodes(graph))
    model, count = smooth(graph, feeds(converted), skip)
    assert count == 6 and len(skip) == 2  # 2 layers: Attention, output and FFN-up; 2 FFN-down
    smoothed = converted / "smoothed.onnx"
    onnx.save(model, str(smoothed))
    for batch in feeds(converted):
        before, after = (
            ort.InferenceSession(str(g), providers=["CPUExecutionProvider"]).run(None, batch)[0]
            for g in (graph, smoothed)
        )
        np.testing.assert_allclose(after, before, atol=1e-5)
    # With alpha 0.5 each channel's calibrated activation range now equals its weight row's.
    nodes = [n for n in weighted_nodes(model) if n.name not in skip]
    ranges = channel_ranges(smoothed, [n.input[0] for n in nodes], feeds(converted))
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in nodes:
        rows = np.abs(weights[node.input[1]]).max(axis=1)
        np.testing.assert_allclose(ranges[node.input[0]], rows, rtol=1e-4)


def test_int8_variant_is_quantised_checked_and_the_cpu_default(converted: Path) -> None:
    recorded = json.loads((converted / "service_model.json").read_text())
    assert recorded["variants"]["int8"] == "model.int8.onnx"
    check = recorded["checks"]["int8"]
    assert check["texts"] == len(CHECK_TEXTS) and check["detail"] == 6
    assert 0.999 <= check["min_cosine"] < 1.0
    assert recorded["default_cpu"] == "int8"
    model = onnx.load(str(converted / "model.int8.onnx"))
    ops = collections.Counter(node.op_type for node in model.graph.node)
    assert ops["QAttention"] == 2 and ops["MatMulInteger"] == 4  # output and FFN-up
    assert ops["MatMul"] == 2 and ops["Attention"] == 0  # the FFN-down ones stay float

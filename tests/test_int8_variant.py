"""The int8 variant: SmoothQuant-style migration that leaves the float graph's outputs
unchanged, then static int8 (QDQ: calibrated activation scales) of every weighted MatMul but
the sensitive ones; checked against fp32, recorded by the converter, never the default, and
batch-invariant where dynamic int8 is not."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.convert.export import export
from service.convert.plan import ExportRequest
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
    names = graph_inputs(directory / "model.onnx")
    return check_batches(directory, names, CHECK_TEXTS, size=8, max_length=16)


def test_sensitive_nodes_are_ffn_down_the_first_ffn_up_and_attention_values(
    converted: Path,
) -> None:
    skip = sensitive_nodes(converted / "model.onnx")
    assert len(skip) == 5  # 2 layers: 2 FFN-down, the first FFN-up, 2 value projections
    assert sum("output.dense" in n or "output/dense" in n for n in skip) == 2
    assert sum("value" in n for n in skip) == 2
    assert sum("intermediate" in n for n in skip) == 1 and any("layer.0" in n for n in skip)


def test_smoothing_keeps_outputs_and_evens_activation_and_weight_ranges(converted: Path) -> None:
    graph = converted / "model.onnx"
    skip = set(sensitive_nodes(graph))
    model, count = smooth(graph, feeds(converted), skip)
    assert count == 12 - 5  # 6 weighted MatMuls a layer
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


def test_int8_variant_is_static_checked_and_never_the_default(converted: Path) -> None:
    recorded = json.loads((converted / "service_model.json").read_text())
    assert recorded["variants"]["int8"] == "model.int8.onnx"
    check = recorded["checks"]["int8"]
    assert check["texts"] == len(CHECK_TEXTS) and check["detail"] == 7
    assert check["method"].startswith("static int8")
    assert 0.99 <= check["min_cosine"] < 1.0
    assert recorded["default_cpu"] == "fp32"
    model = onnx.load(str(converted / "model.int8.onnx"))
    ops = collections.Counter(node.op_type for node in model.graph.node)
    assert ops["DynamicQuantizeLinear"] == 0 and ops["MatMulInteger"] == 0
    # each quantised MatMul: its activation quantised with a fixed scale, its weight stored
    assert ops["QuantizeLinear"] >= 7 and ops["DequantizeLinear"] >= 14
    scales = [i for i in model.graph.initializer if i.name.endswith("_scale")]
    assert scales and all(onnx.numpy_helper.to_array(i).size >= 1 for i in scales)


def alone_and_in_batches(graph: Path, directory: Path) -> float:
    """Largest difference of one text's output run alone and inside batches of longer and
    shorter companions (padded to their width)."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = graph_inputs(graph)
    target = "the quick brown fox"
    alone = session.run(None, check_batches(directory, names, [target], size=1)[0])[0][0]
    worst = 0.0
    companions = [CHECK_TEXTS[3:10], CHECK_TEXTS[12:14], ["a", "b c"], CHECK_TEXTS[:7]]
    for others in companions:
        batch = check_batches(directory, names, [target, *others], size=8, max_length=16)[0]
        ids = check_batches(directory, names, [target], size=1)[0]["input_ids"][0]
        rows = batch["input_ids"][:, : len(ids)]
        row = int(
            np.flatnonzero(
                (rows == ids).all(axis=1) & (batch["attention_mask"].sum(1) == len(ids))
            )[0]
        )
        inside = session.run(None, batch)[0][row]
        worst = max(worst, float(np.abs(inside - alone).max()))
    return worst


def test_static_int8_is_batch_invariant_where_dynamic_int8_is_not(
    converted: Path, tmp_path: Path
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert alone_and_in_batches(converted / "model.int8.onnx", converted) <= 1e-6
    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(converted / "model.onnx"), str(dynamic), weight_type=QuantType.QInt8)
    shutil.copy(converted / "tokenizer.json", tmp_path / "tokenizer.json")
    assert alone_and_in_batches(dynamic, tmp_path) > 1e-5  # the property tests' bound

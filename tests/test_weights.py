"""service/engine/weights.py reads an ONNX graph's initializers from the protobuf wire format
exactly as the `onnx` package does, and refuses what it does not read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.engine.weights import Unreadable, read_initializers
from tests import tiny_models

RAW = {  # name -> array, stored as raw_data (what exporters write)
    "f32": np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4),
    "i8": np.array([[-128, -1, 0, 1, 127]], dtype=np.int8),
    "u8": np.array([0, 7, 255], dtype=np.uint8),
    "f16": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
    "i64": np.array([-(2**40), -1, 0, 2**62], dtype=np.int64),
    "f64": np.array([np.pi, -np.e], dtype=np.float64),
    "flag": np.array([True, False, True]),
    "scalar": np.array(1.25, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
}
TYPED: list[tuple[str, int, list[int], list[Any]]] = [  # stored in the typed repeated fields
    ("t_f32", TensorProto.FLOAT, [2, 2], [1.5, -2.25, 1e-30, 3e30]),
    ("t_i64", TensorProto.INT64, [3], [-5, 0, 2**63 - 1]),
    ("t_i32", TensorProto.INT32, [2], [-(2**31), 2**31 - 1]),
    ("t_i8", TensorProto.INT8, [3], [-128, -7, 127]),
    ("t_u16", TensorProto.UINT16, [2], [0, 65535]),
    ("t_f16", TensorProto.FLOAT16, [2], [np.float16(-0.75), np.float16(3.0)]),
    ("t_f64", TensorProto.DOUBLE, [1], [2.0**-1000]),
    ("t_u64", TensorProto.UINT64, [2], [0, 2**64 - 1]),
    ("t_bool", TensorProto.BOOL, [2], [True, False]),
]


def write_graph(path: Path, *, external: bool = False) -> dict[str, np.ndarray]:
    """A graph holding every kind of initializer above; returns what `onnx` reads back."""
    inits = [numpy_helper.from_array(array, name) for name, array in RAW.items()]
    inits += [helper.make_tensor(name, dtype, dims, values) for name, dtype, dims, values in TYPED]
    assert all(not init.raw_data for init in inits[len(RAW) :])  # really the typed fields
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "f32"], ["y"])], "g", [x], [y], initializer=inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save(model, str(path), save_as_external_data=True, size_threshold=0)
    else:
        onnx.save(model, str(path))
    stored = onnx.load(str(path)).graph.initializer
    return {init.name: numpy_helper.to_array(init) for init in stored}


def assert_same(read: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(read) == sorted(expected)
    for name, array in expected.items():
        assert read[name].dtype == array.dtype, name
        assert read[name].shape == array.shape, name
        np.testing.assert_array_equal(read[name], array, err_msg=name)


def test_every_layout_and_type_reads_as_onnx_reads_it(tmp_path: Path) -> None:
    expected = write_graph(tmp_path / "all.onnx")
    read = read_initializers(tmp_path / "all.onnx")
    assert_same(read, expected)
    assert read["t_i64"][2] == 2**63 - 1 and read["t_i8"][0] == -128  # two's complement
    assert read["t_u64"][1] == 2**64 - 1
    for array in read.values():  # fresh arrays ONNX Runtime can hold in place, 64-byte aligned
        assert array.flags.writeable and array.flags.c_contiguous
        assert array.size == 0 or array.ctypes.data % 64 == 0


def test_the_tiny_and_the_real_graphs_read_as_onnx_reads_them(
    tiny_dense: tuple[Path, np.ndarray], real_minilm: Path
) -> None:
    directory, table = tiny_dense
    read = read_initializers(directory / "model.onnx")
    np.testing.assert_array_equal(read["table"], table)
    for graph in ("model.onnx", "model.int8.onnx"):
        model = onnx.load(str(real_minilm / graph))
        expected = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        assert len(expected) > 100
        assert_same(read_initializers(real_minilm / graph), expected)


def test_weights_in_external_files_are_refused(tmp_path: Path) -> None:
    write_graph(tmp_path / "external.onnx", external=True)
    with pytest.raises(Unreadable, match="layout"):
        read_initializers(tmp_path / "external.onnx")


def test_a_graph_without_weights_or_cut_short_is_refused(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [x])
    onnx.save(helper.make_model(graph), str(tmp_path / "bare.onnx"))
    with pytest.raises(Unreadable, match="no initializers"):
        read_initializers(tmp_path / "bare.onnx")
    table = tiny_models.embedding_table(40)
    tiny_models.write_dense_graph(tmp_path / "whole.onnx", table)
    whole = (tmp_path / "whole.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(Unreadable, match="truncated"):
        read_initializers(tmp_path / "cut.onnx")

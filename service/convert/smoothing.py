"""SmoothQuant-style migration of activation outliers into the weights, before int8.

BERT's LayerNorm outputs have a few channels far wider than the rest (in MiniLM-L6 one
channel reaches about 30 where the median channel stays near 2). Dynamic quantisation gives
each activation tensor one scale, so those channels crush the others. For a MatMul or fused
Attention node with input x and constant weight W (K x N), scaling channel j of x by 1/s_j
and row j of W by s_j leaves the product unchanged and evens out the ranges:
s_j = max|x_j| ** alpha / max|W_j,:| ** (1 - alpha), with max|x_j| calibrated on real texts.
The input also feeds the residual branch, so the division is a Mul in front of the node
rather than folded into the LayerNorm's gamma.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ALPHA = 0.5


def weighted_nodes(model: Any) -> list[Any]:
    """Nodes whose input 0 is an activation and input 1 a constant (K, N) weight."""
    constants = {init.name for init in model.graph.initializer}
    return [
        node
        for node in model.graph.node
        if node.op_type in ("MatMul", "Attention") and node.input[1] in constants
    ]


def channel_ranges(
    graph: Path, names: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel max |value| of the named tensors over the unpadded tokens of the feeds."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(graph))
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        tokens = feed["attention_mask"].astype(bool)
        for name, value in zip(names, session.run(names, feed), strict=True):
            widest = np.abs(value[tokens]).max(axis=0)
            ranges[name] = np.maximum(ranges.get(name, widest), widest)
    return ranges


def smooth(
    graph: Path,
    feeds: list[dict[str, np.ndarray]],
    skip: set[str],
    alpha: float = ALPHA,
) -> tuple[Any, int]:
    """The graph with each weighted node not in `skip` smoothed, and how many were."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    nodes = [node for node in weighted_nodes(model) if node.name not in skip]
    ranges = channel_ranges(graph, sorted({node.input[0] for node in nodes}), feeds)
    constants = {init.name: init for init in model.graph.initializer}
    for node in nodes:
        weight = constants[node.input[1]]
        values = numpy_helper.to_array(weight).astype(np.float32)
        widest = np.maximum(np.abs(values).max(axis=1), 1e-5)
        scale = (np.maximum(ranges[node.input[0]], 1e-5) ** alpha / widest ** (1 - alpha)).astype(
            np.float32
        )
        weight.CopyFrom(numpy_helper.from_array(values * scale[:, None], weight.name))
        key = node.output[0]  # node names may be empty
        divisor = f"{key}_smooth_scale"
        model.graph.initializer.append(numpy_helper.from_array(1 / scale, divisor))
        smoothed = f"{key}_smoothed_input"
        mul = onnx.helper.make_node(
            "Mul", [node.input[0], divisor], [smoothed], name=f"{key}_smooth"
        )
        node.input[0] = smoothed
        model.graph.node.insert(list(model.graph.node).index(node), mul)
    return model, len(nodes)

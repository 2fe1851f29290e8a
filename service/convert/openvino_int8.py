"""The ``openvino-int8`` graph variant: NNCF's post-training static int8 of the fp32 graph, as
OpenVINO IR (``model.ov-int8.xml`` and its ``.bin``), served by OpenVINO on CPU.

The fp32 ONNX graph is read by OpenVINO and quantised by NNCF (transformer preset: int8
weights per channel, activations per tensor with scales calibrated once; fast bias
correction; SmoothQuant off, see Int8Options) on the converter's check texts, one text per
calibration sample, so no padded token moves a range. The activation scales are constants of
the graph, yet OpenVINO's int8 execution moves some vectors when they are padded wider (6.5%
of bench passages below cosine 0.99999: docs/benchmarks/2026-12-07-cpu-2core-int8-recall.md,
which also measures why no int8 graph here keeps 0.97 of the fp32 top 10). The options were
chosen with the figures in docs/benchmarks/2026-12-07-cpu-2core-openvino-int8.md
(``python -m bench.openvino_options``).

Needs the ``openvino`` extra (openvino and nncf).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

GRAPH_FILE = "model.ov-int8.xml"
KEEP_FP32 = ("none", "attention", "down", "down+attention")  # MatMuls left fp32: keep_fp32()


@dataclass(frozen=True)
class Int8Options:
    """The quantiser's knobs that trade a little speed for accuracy."""

    # NNCF's default for MatMuls in the transformer preset is 0.95; off (-1) kept the most of
    # MiniLM's vectors at full speed (docs/benchmarks/2026-12-07-cpu-2core-openvino-int8.md)
    smooth_quant_alpha: float = -1
    fast_bias_correction: bool = True
    subset_size: int = 600  # calibration samples (texts) at most
    keep_fp32: str = "none"  # one of KEEP_FP32


DEFAULT_OPTIONS = Int8Options()


def matmuls(model: Any) -> tuple[list[tuple[str, int, int]], list[str]]:
    """(name, K, N) of each MatMul of `model` (an openvino.Model) with a constant weight, and
    the names of those of two activations (attention's scores and weighted values), in graph
    order."""
    weighted, activations = [], []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        source = op.input_value(1).get_node()
        while source.get_type_name() in ("Convert", "Reshape") and source.get_input_size():
            source = source.input_value(0).get_node()
        if source.get_type_name() != "Constant":
            activations.append(op.get_friendly_name())
            continue
        shape = list(op.input_value(1).get_partial_shape().to_shape())
        if len(shape) != 2:
            continue
        k, n = (shape[1], shape[0]) if op.get_attributes().get("transpose_b") else shape
        weighted.append((op.get_friendly_name(), int(k), int(n)))
    return weighted, activations


def keep_fp32(model: Any, which: str) -> list[str]:
    """MatMuls kept in fp32: ``attention``, the two of attention that multiply activations
    (scores and weighted values); ``down``, the feed-forward down-projections (K > N, GELU
    outputs, the widest-ranged activations); or both."""
    if which not in KEEP_FP32:
        raise ValueError(f"keep_fp32 must be one of {KEEP_FP32}, not {which!r}")
    weighted, activations = matmuls(model)
    down = [name for name, k, n in weighted if k > n]
    return {
        "none": [],
        "attention": activations,
        "down": down,
        "down+attention": down + activations,
    }[which]


def quantize(
    source: Path,
    target: Path,
    samples: list[dict[str, np.ndarray]],
    options: Int8Options = DEFAULT_OPTIONS,
) -> dict[str, Any]:
    """Write the int8 IR of `source` (an fp32 ONNX graph) to `target`, calibrated on
    `samples` (feeds of one text each); what was done, for service_model.json."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    model = ov.Core().read_model(str(source))
    kept = keep_fp32(model, options.keep_fp32)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=min(options.subset_size, len(samples)),
        fast_bias_correction=options.fast_bias_correction,
        ignored_scope=nncf.IgnoredScope(names=kept) if kept else None,
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=options.smooth_quant_alpha)
        ),
    )
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return {
        **asdict(options),
        "calibration_texts": min(options.subset_size, len(samples)),
        "kept_fp32": len(kept),
        "openvino": ov.__version__,
        "nncf": nncf.__version__,
    }

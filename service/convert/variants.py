"""Faster graph variants of an exported model, each checked against the fp32 graph.

- optimized: ONNX Runtime's transformer fusions (Attention, EmbedLayerNormalization,
  SkipLayerNormalization, BiasGelu); numerically the same graph.
- int8: static int8 (QDQ) of the weighted MatMuls of the fp32 graph: per-channel int8
  weights, and uint8 activations with scales calibrated once on the check texts, so a
  vector never depends on what shares its batch (dynamic quantisation takes its scales over
  the whole batch: vectors moved with other clients' traffic). Before it, SmoothQuant-style
  migration of activation outliers into the weights (service/convert/smoothing.py). The
  nodes that lose most are kept in fp32 (``sensitive_nodes``).
- openvino-int8: NNCF's static int8 as OpenVINO IR, served by OpenVINO on CPU
  (service/convert/openvino_int8.py): about 3x the fp32 graph on CPU, and closer to it.
- fp16: the optimized graph in float16 with float32 inputs and outputs, for GPUs.

Each variant's agreement with fp32 (min and mean cosine of the pooled output over a varied
check set) is recorded in service_model.json. The default graph on each provider must give
the model's own vectors (min cosine ``EXACT_COSINE``): fp32 on CPU, fp16 on GPU where it
keeps that; int8 is only ever an opt-in (``NAME:openvino-int8``, ``NAME:int8`` or
``EMBED_GRAPH_VARIANT=...``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.models.store import EXACT_COSINE

if TYPE_CHECKING:
    from service.models.loaded import GraphRunner

SMOOTHING_ALPHA = 0.7  # static int8: best of 0.3-0.85 for MiniLM (docs/benchmarks)
PASS_THROUGH = {"Add", "Reshape", "Transpose", "Cast", "Identity", "Squeeze", "Unsqueeze"}
CHECK_TEXTS = [
    "hello world",
    "What is the capital of France?",
    "a",
    "How do I sort a dict by value?",
    "The quick brown fox jumps over the lazy dog.",
    "Qdrant supports hybrid search.",
    "Café crème brûlée",
    "Привет, как дела?",
    "你好，世界",
    "emoji 🚀 rocket",
    "def add(a, b):\n    return a + b",
    "SELECT * FROM users WHERE id = 1;",
    "The asyncio module provides infrastructure for writing single-threaded concurrent code "
    "using coroutines, multiplexing I/O access over sockets and other resources.",
    "Exceptions are raised when errors are detected during execution; they can be handled "
    "with try and except clauses, and cleanup actions can be defined with finally. " * 6,
    "embedding",
    "reranking with cross encoders",
    "sparse vectors from SPLADE",
    "BM25",
    "numbers 3.14159 2.71828 and 42",
    "A long time ago in a galaxy far, far away...",
]


def optimize(source: Path, target: Path, config: dict[str, Any]) -> dict[str, int]:
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(
        str(source),
        model_type="bert",
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        opt_level=1,
    )
    model.save_model_to_file(str(target))
    stats = model.get_fused_operator_statistics()
    return {name: count for name, count in stats.items() if count}


def sensitive_nodes(graph: Path) -> list[str]:
    """Weighted MatMuls kept in fp32 by static int8, the ones that lost most when quantised
    alone (MiniLM, each node on its own, docs/benchmarks/2026-12-02-cpu-2core-exact.md): the
    feed-forward down-projections (weight K > N, GELU outputs: min cosine 0.95-0.99 each),
    the first layer's up-projection (0.998) and the attention value projections (0.9996
    each, six of them). What is left costs about 0.007 of cosine in all."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    weighted = [
        node
        for node in model.graph.node
        if node.op_type == "MatMul" and len(shapes.get(node.input[1], ())) == 2
    ]
    down = [n for n in weighted if shapes[n.input[1]][0] > shapes[n.input[1]][1]]
    up = [n for n in weighted if shapes[n.input[1]][0] < shapes[n.input[1]][1]]
    values = [n for n in weighted if _feeds_attention_values(model, n)]
    return [n.name for n in [*down, *up[:1], *values]]


def _feeds_attention_values(model: Any, node: Any) -> bool:
    """The node's output reaches, through reshapes, transposes and bias adds only, the
    second input of a MatMul whose first input is a Softmax's output (probabilities @ V)."""
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    frontier = [node.output[0]]
    while frontier:
        tensor = frontier.pop()
        for user in consumers.get(tensor, []):
            if user.op_type == "MatMul" and user.input[1] == tensor:
                source = producers.get(user.input[0])
                while source is not None and source.op_type in PASS_THROUGH | {"Dropout"}:
                    source = producers.get(source.input[0])
                if source is not None and source.op_type == "Softmax":
                    return True
            elif user.op_type in PASS_THROUGH:
                frontier.extend(user.output[:1])
    return False


def quantize(source: Path, target: Path, texts: list[str], max_length: int = 256) -> int:
    """Smooth, then statically quantise all but the sensitive nodes (activation scales
    calibrated on `texts`, min-max); the number of nodes quantised."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from service.convert.smoothing import smooth, weighted_nodes

    excluded = sensitive_nodes(source)
    feeds = check_batches(source.parent, graph_inputs(source), texts, max_length=max_length)
    smoothed, _ = smooth(source, feeds, skip=set(excluded), alpha=SMOOTHING_ALPHA)
    staged = target.with_suffix(".smoothed.onnx")
    onnx.save(smoothed, str(staged))

    class Calibration(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            self.batches = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    try:
        quantize_static(
            str(staged),
            str(target),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        staged.unlink(missing_ok=True)
    return sum(1 for node in weighted_nodes(smoothed) if node.name not in set(excluded))


def graph_inputs(graph: Path) -> list[str]:
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    constants = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in constants]


def to_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target))


def read_texts(path: Path, limit: int = 2000) -> list[str]:
    """Texts for the agreement check: JSON lines with a "text" field, or plain lines."""
    texts = []
    for line in path.read_text().splitlines()[:limit]:
        stripped = line.strip()
        if stripped:
            texts.append(json.loads(stripped)["text"] if stripped.startswith("{") else stripped)
    return texts


def check_batches(
    directory: Path, input_names: list[str], texts: list[str], size: int = 32, max_length: int = 256
) -> list[dict[str, np.ndarray]]:
    """Length-sorted, right-padded batches of the check texts."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)  # never past the model's positions
    encoded = sorted((e.ids for e in tokenizer.encode_batch(texts)), key=len)
    batches = []
    for start in range(0, len(encoded), size):
        rows = encoded[start : start + size]
        ids = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        batches.append({k: v for k, v in feed.items() if k in input_names})
    return batches


def pooled(output: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(batch, ...) -> (batch, features): masked mean over tokens for token outputs."""
    if output.ndim == 3 and output.shape[:2] == mask.shape:
        weights = mask[:, :, None].astype(np.float64)
        return np.asarray((output * weights).sum(axis=1) / weights.sum(axis=1))
    return output.reshape(output.shape[0], -1).astype(np.float64)


def agreement(
    directory: Path, reference: str, candidate: str, texts: list[str], max_length: int = 256
) -> dict[str, float]:
    """Min and mean cosine, per text, of the first output (masked mean over tokens)."""
    sessions = [cpu_runner(directory / name) for name in (reference, candidate)]
    names = list(sessions[0].input_names)
    cosines: list[float] = []
    for feed in check_batches(directory, names, texts, max_length=max_length):
        a, b = (pooled(s.run(feed)[0], feed["attention_mask"]) for s in sessions)
        cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        cosines.extend(cos.tolist())
    return {"min_cosine": min(cosines), "mean_cosine": float(np.mean(cosines)), "texts": len(texts)}


def cpu_runner(graph: Path) -> GraphRunner:
    """A CPU session of any graph the service serves (ONNX, or OpenVINO IR) on every core."""
    from service.engine.loading import cpu_runner as runner
    from service.engine.runner import default_threads

    return runner(graph, default_threads(1))


def add_variants(
    directory: Path,
    metadata: dict[str, Any],
    *,
    optimized: bool,
    int8: bool,
    fp16: bool,
    openvino_int8: bool = False,
    check_texts: list[str] | None = None,
) -> dict[str, Any]:
    """Write the asked variants next to model.onnx and record them in the metadata."""
    config = (
        json.loads((directory / "config.json").read_text())
        if (directory / "config.json").is_file()
        else {}
    )
    variants: dict[str, str] = metadata["variants"]
    checks: dict[str, Any] = metadata.setdefault("checks", {})
    texts = CHECK_TEXTS + (check_texts or [])  # also the int8 calibration set
    limit = min(256, int(metadata["spec"].get("max_length", 256)))
    steps: list[tuple[str, str, Callable[[], Any]]] = []
    if optimized or int8 or fp16:
        steps.append(
            (
                "optimized",
                "model.opt.onnx",
                lambda: optimize(directory / "model.onnx", directory / "model.opt.onnx", config),
            )
        )
    if int8:
        steps.append(
            (
                "int8",
                "model.int8.onnx",
                lambda: quantize(
                    directory / "model.onnx", directory / "model.int8.onnx", texts, limit
                ),
            )
        )
    if openvino_int8:
        from service.convert import openvino_int8 as ov_int8

        samples = check_batches(
            directory, graph_inputs(directory / "model.onnx"), texts, size=1, max_length=limit
        )
        steps.append(
            (
                "openvino-int8",
                ov_int8.GRAPH_FILE,
                lambda: ov_int8.quantize(
                    directory / "model.onnx", directory / ov_int8.GRAPH_FILE, samples
                ),
            )
        )
    if fp16:
        steps.append(
            (
                "fp16",
                "model.fp16.onnx",
                lambda: to_fp16(directory / "model.opt.onnx", directory / "model.fp16.onnx"),
            )
        )
    for name, filename, build in steps:
        detail = build()
        variants[name] = filename
        found = agreement(directory, "model.onnx", filename, texts, limit)
        checks[name] = {**found, "detail": detail, "method": METHODS[name]}
    # The exported graph on CPU (ONNX Runtime fuses it at load; the offline fusions measured
    # 1.00-1.04x); on GPU the fastest graph that keeps the model's own vectors.
    metadata["default_cpu"] = "fp32"
    metadata["default_gpu"] = best(checks, ("fp16", "optimized"), EXACT_COSINE)
    return metadata


METHODS = {
    "optimized": "ONNX Runtime's transformer fusions, fp32",
    "int8": "static int8 (QDQ): per-channel weights, calibrated activation scales",
    "openvino-int8": "NNCF static int8 (transformer preset), OpenVINO IR",
    "fp16": "float16 of the fused graph",
}


def best(checks: dict[str, Any], preference: tuple[str, ...], floor: float) -> str:
    for name in preference:
        if name in checks and checks[name]["min_cosine"] >= floor:
            return name
    return "fp32"

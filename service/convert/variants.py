"""Faster graph variants of an exported model, each checked against the fp32 graph.

- optimized: ONNX Runtime's transformer fusions (Attention, EmbedLayerNormalization,
  SkipLayerNormalization, BiasGelu); numerically the same graph.
- int8: dynamic per-channel int8 weights for the MatMuls and fused Attention nodes of the
  optimized graph, after SmoothQuant-style migration of their inputs' outlier channels into
  the weights (service/convert/smoothing.py, calibrated on the check texts), except the
  feed-forward down-projections, whose GELU inputs lose too much even when smoothed.
- fp16: the optimized graph in float16 with float32 inputs and outputs, for GPUs.

Each variant's agreement with fp32 (min and mean cosine of the pooled output over a varied
check set) is recorded in service_model.json; a variant becomes the default only when its
minimum cosine clears the floor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CPU_FLOOR = 0.99  # min cosine against fp32 for a CPU default
GPU_FLOOR = 0.999
ACTIVATIONS = {"Gelu", "BiasGelu", "FastGelu", "Relu", "QuickGelu"}
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
    """MatMuls fed by an activation (feed-forward down-projections)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and producers.get(node.input[0]) in ACTIVATIONS
    ]


def quantize(source: Path, target: Path, texts: list[str], max_length: int = 256) -> int:
    """Smooth, then quantise all but the sensitive nodes; the number of smoothed nodes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from service.convert.smoothing import smooth

    excluded = sensitive_nodes(source)
    names = graph_inputs(source)
    feeds = check_batches(source.parent, names, texts, max_length=max_length)
    smoothed, count = smooth(source, feeds, skip=set(excluded))
    quantize_dynamic(
        smoothed,
        str(target),
        op_types_to_quantize=["MatMul", "Attention"],
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=excluded,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return count


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
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(str(directory / name), providers=["CPUExecutionProvider"])
        for name in (reference, candidate)
    ]
    names = [i.name for i in sessions[0].get_inputs()]
    cosines: list[float] = []
    for feed in check_batches(directory, names, texts, max_length=max_length):
        a, b = (pooled(s.run(None, feed)[0], feed["attention_mask"]) for s in sessions)
        cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        cosines.extend(cos.tolist())
    return {"min_cosine": min(cosines), "mean_cosine": float(np.mean(cosines)), "texts": len(texts)}


def add_variants(
    directory: Path,
    metadata: dict[str, Any],
    *,
    optimized: bool,
    int8: bool,
    fp16: bool,
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
                    directory / "model.opt.onnx", directory / "model.int8.onnx", texts, limit
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
        checks[name] = {**found, "detail": detail}
    metadata["default_cpu"] = best(checks, ("int8", "optimized"), CPU_FLOOR)
    metadata["default_gpu"] = best(checks, ("fp16", "optimized"), GPU_FLOOR)
    return metadata


def best(checks: dict[str, Any], preference: tuple[str, ...], floor: float) -> str:
    for name in preference:
        if name in checks and checks[name]["min_cosine"] >= floor:
            return name
    return "fp32"

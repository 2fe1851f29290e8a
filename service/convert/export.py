"""Export a transformers / sentence-transformers checkpoint to an ONNX model directory the
service serves. Needs the optional `convert` extra (torch, transformers, onnx); the service
itself never imports this module.

Each kind has a *planner* (``PLANNERS``; what a plan holds is in plan.py) that loads the
checkpoint and says what to export. ``export`` does the rest for every kind the same way:
torch.onnx.export (opset 17), a check against PyTorch on the example, tokenizer files and
``service_model.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from service.convert import (
    image_export,
    m3_export,
    multimodal_export,
    pooled_export,
    sparse_export,
)
from service.convert.colbert import plan_colbert
from service.convert.plan import (
    ExportRequest,
    Planner,
    plan_cross_encoder,
    plan_splade,
)
from service.models.store import METADATA_FILE

OPSET = 17
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "vocab.txt",
    "preprocessor_config.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)


# kind -> planner. New kinds register here (their planners may live in their own modules).
PLANNERS: dict[str, Planner] = {
    "dense": pooled_export.plan_dense_pooled,  # pooling in the graph where it fits
    "sparse": plan_splade,
    "rerank": plan_cross_encoder,
    "late": plan_colbert,
    "bm42": sparse_export.plan_bm42,
    "image": image_export.plan_image_tower,
    "clip-text": image_export.plan_text_tower,
    "multimodal": multimodal_export.plan_colpali,
    "m3": m3_export.plan_m3,
}


def export(request: ExportRequest) -> dict[str, Any]:
    """Write OUT/model.onnx, the tokenizer files and service_model.json; return the metadata."""
    import torch

    if request.kind not in PLANNERS:
        raise SystemExit(
            f"convert: no exporter for kind {request.kind!r} (have {sorted(PLANNERS)})"
        )
    request.out.mkdir(parents=True, exist_ok=True)
    plan = PLANNERS[request.kind](request)
    graph = request.out / "model.onnx"
    names = list(plan.inputs)
    example = tuple(plan.inputs.values())
    with torch.no_grad():
        # Reference first: tracing can leave state behind that changes a later eager call.
        reference = plan.module(*example)
        torch.onnx.export(
            plan.module,
            example,
            str(graph),
            input_names=names,
            output_names=plan.outputs,
            dynamic_axes=plan.axes,
            opset_version=OPSET,
            dynamo=False,
        )
    feeds = {name: tensor.numpy() for name, tensor in plan.inputs.items()}
    mask = None if plan.compare_mask is None else plan.compare_mask.numpy()
    error = max_error(graph, feeds, reference, mask)
    if plan.needs_tokenizer:
        copy_tokenizer_files(request.source, request.out)
    else:
        copy_files(request.source, request.out)
    spec = {"name": request.name or request.source.name, "kind": request.kind, **plan.spec}
    if request.options:
        spec["options"] = {**spec.get("options", {}), **request.options}
    metadata = {
        "spec": spec,
        "model_file": "model.onnx",
        "variants": {"fp32": "model.onnx"},
        "default_cpu": "fp32",
        "default_gpu": "fp32",
        "export": {
            "opset": OPSET,
            "outputs": plan.outputs,
            "max_abs_error_vs_torch": error,
            "source": str(request.source),
        },
    }
    if request.optimize or request.int8 or request.openvino_int8 or request.fp16:
        from service.convert.variants import add_variants

        add_variants(
            request.out,
            metadata,
            optimized=request.optimize,
            int8=request.int8,
            openvino_int8=request.openvino_int8,
            fp16=request.fp16,
            check_texts=request.check_texts,
        )
    if request.kind == "dense":  # int8 / uint8 output ranges (service/front/serving/quantize.py)
        from service.convert.calibration import calibrate
        from service.convert.variants import CHECK_TEXTS

        calibrate(request.out, metadata, CHECK_TEXTS + request.check_texts)
    write_metadata(request.out, metadata)
    return metadata


def max_error(graph: Path, feeds: dict[str, Any], reference: Any, mask: Any) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch on the example
    (token outputs compared only at unmasked positions: padded ones hold arbitrary values)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    expected = reference if isinstance(reference, tuple) else (reference,)
    worst = 0.0
    for ours, theirs in zip(got, expected, strict=True):
        theirs = theirs.detach().numpy()
        if mask is not None and ours.ndim >= 3 and ours.shape[:2] == mask.shape:
            ours, theirs = ours[mask == 1], theirs[mask == 1]
        worst = max(worst, float(np.max(np.abs(ours - theirs))))
    return worst


def copy_files(source: Path, out: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)


def copy_tokenizer_files(source: Path, out: Path) -> None:
    copy_files(source, out)
    if not (out / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(source)).backend_tokenizer.save(
            str(out / "tokenizer.json")
        )


def write_metadata(out: Path, metadata: dict[str, Any]) -> None:
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def read_metadata_file(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / METADATA_FILE).read_text())
    return data

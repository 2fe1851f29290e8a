"""`python -m service convert SOURCE OUT`: export a checkpoint to a servable ONNX directory."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service convert",
        description="Export a transformers / sentence-transformers checkpoint to ONNX (opset 17, "
        "dynamic batch and sequence axes) with the files the service needs.",
    )
    p.add_argument("source", type=Path, help="checkpoint directory (safetensors + config)")
    p.add_argument("out", type=Path, help="model directory to write")
    p.add_argument(
        "--kind",
        help="dense (default), sparse (SPLADE), rerank, late, m3, ...; m3 (BGE-M3) is chosen "
        "by itself for FlagEmbedding's layout (colbert_linear.pt and sparse_linear.pt beside "
        "the encoder)",
    )
    p.add_argument("--name", help="model name to serve it under (default: the source dir name)")
    p.add_argument("--max-length", type=int, help="max tokens (default: from the checkpoint)")
    p.add_argument("--pooling", choices=["cls", "mean", "last"], help="dense pooling override")
    p.add_argument("--no-normalize", action="store_true", help="dense: do not L2-normalise")
    p.add_argument(
        "--attentions", action="store_true", help="also output the last layer's attentions (BM42)"
    )
    p.add_argument(
        "--pool-in-graph",
        action="store_true",
        help="dense: mean pooling + normalisation inside the graph",
    )
    p.add_argument(
        "--token-outputs",
        action="store_true",
        help="dense: output token states and pool in the service (default: pool in the graph "
        "for mean, cls and last pooling)",
    )
    p.add_argument(
        "--optimize",
        action="store_true",
        help="also write model.opt.onnx with ONNX Runtime's transformer fusions",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (smoothed dynamic int8, FFN down-projections kept)",
    )
    p.add_argument(
        "--openvino-int8",
        action="store_true",
        help="also write model.ov-int8.xml: NNCF's static int8 as OpenVINO IR, for CPUs "
        "(needs the openvino extra)",
    )
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx for GPUs")
    p.add_argument(
        "--check-texts",
        type=Path,
        action="append",
        default=[],
        help="JSON-lines or text file of extra texts for the variants' agreement check",
    )
    p.add_argument(
        "--options", type=json.loads, default={}, help="JSON object of catalogue options to record"
    )
    return p


def main(argv: Sequence[str]) -> int:
    from service.convert.export import export
    from service.convert.m3_export import is_m3_layout
    from service.convert.plan import ExportRequest
    from service.convert.variants import read_texts

    args = parser().parse_args(argv)
    request = ExportRequest(
        source=args.source,
        out=args.out,
        kind=args.kind or ("m3" if is_m3_layout(args.source) else "dense"),
        name=args.name,
        max_length=args.max_length,
        pooling=args.pooling,
        normalize=False if args.no_normalize else None,
        attentions=args.attentions,
        pool_in_graph=args.pool_in_graph,
        token_outputs=args.token_outputs,
        options=args.options,
        optimize=args.optimize,
        int8=args.int8,
        openvino_int8=args.openvino_int8,
        fp16=args.fp16,
        check_texts=[text for path in args.check_texts for text in read_texts(path)],
    )
    metadata = export(request)
    summary = {
        "out": str(args.out),
        **metadata["export"],
        "spec": metadata["spec"],
        "checks": metadata.get("checks", {}),
        "default_cpu": metadata["default_cpu"],
        "default_gpu": metadata["default_gpu"],
    }
    print(json.dumps(summary))
    return 0

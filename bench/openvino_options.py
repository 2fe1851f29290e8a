"""The quantiser's options for the openvino-int8 variant, side by side: each one's agreement
with the fp32 graph and its speed, measured in one run (docs/benchmarks/
2026-12-07-cpu-2core-openvino-int8.md).

    python -m bench.openvino_options [--model DIR] [--rounds N] [--passages N]

DIR is a converted model directory (its model.onnx is quantised afresh for each option set,
calibrated as the converter does: its check texts, data/calibration and the bench queries).
Agreement: min and mean cosine to fp32 over those texts (the converter's check) and over the
bench passages (none of them calibrated on). Speed: passages/s of length-sorted batches of 32,
every graph measured in turn, `rounds` times, the median kept, as a ratio to ONNX Runtime's
fp32 measured in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench import corpus, inprocess
from bench.corpus import CORPUS, ROOT
from service.convert import openvino_int8 as ov_int8
from service.convert.variants import CHECK_TEXTS, check_batches, graph_inputs, read_texts

NNCF = replace(ov_int8.DEFAULT_OPTIONS, smooth_quant_alpha=0.95)  # NNCF's own defaults
OPTIONS = {
    "NNCF's defaults (SmoothQuant 0.95, fast bias correction, 600 texts)": NNCF,
    "300 texts": replace(NNCF, subset_size=300),
    "SmoothQuant alpha 0.5": replace(NNCF, smooth_quant_alpha=0.5),
    "SmoothQuant off (the converter's choice)": ov_int8.DEFAULT_OPTIONS,
    "full bias correction": replace(NNCF, fast_bias_correction=False),
    "attention MatMuls fp32": replace(NNCF, keep_fp32="attention"),
    "FFN down-projections fp32": replace(NNCF, keep_fp32="down"),
    "both fp32": replace(NNCF, keep_fp32="down+attention"),
}


def calibration_texts() -> list[str]:
    files = [ROOT / "data" / "calibration" / "cpython-docs.jsonl", CORPUS / "queries.jsonl"]
    return CHECK_TEXTS + [text for path in files if path.is_file() for text in read_texts(path)]


def cosines(directory: Path, graph: str, texts: list[str], base: np.ndarray) -> tuple[float, float]:
    _, vectors = inprocess.throughput(directory, graph, texts, 32, inprocess.THREADS)
    found = (vectors * base).sum(axis=1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(base, axis=1)
    )
    return float(found.min()), float(found.mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openvino_options", description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passages", type=int, default=1024)
    parser.add_argument("--only", action="append", default=[], help="option names to run")
    args = parser.parse_args(argv)
    texts = calibration_texts()
    passages = corpus.load("passages.jsonl", args.passages)
    metadata = json.loads((args.model / "service_model.json").read_text())
    limit = min(256, int(metadata["spec"].get("max_length", 256)))
    samples = check_batches(
        args.model, graph_inputs(args.model / "model.onnx"), texts, size=1, max_length=limit
    )
    with tempfile.TemporaryDirectory() as scratch:  # not beside the model: models/ is shared
        work = Path(scratch)
        for name in ("model.onnx", "tokenizer.json", "service_model.json"):
            (work / name).symlink_to((args.model / name).resolve())
        graphs = {"fp32, ONNX Runtime": "model.onnx"}
        details = {}
        for index, (label, options) in enumerate(OPTIONS.items()):
            if args.only and label not in args.only:
                continue
            graph = f"option{index}.xml"
            details[label] = ov_int8.quantize(work / "model.onnx", work / graph, samples, options)
            graphs[label] = graph
        _, base_texts = inprocess.throughput(work, "model.onnx", texts, 32, inprocess.THREADS)
        _, base_passages = inprocess.throughput(work, "model.onnx", passages, 32, inprocess.THREADS)
        rates: dict[str, list[float]] = {label: [] for label in graphs}
        for _ in range(args.rounds):
            for label, graph in graphs.items():
                rate, _ = inprocess.throughput(work, graph, passages, 32, inprocess.THREADS)
                rates[label].append(rate)
        base_rate = float(np.median(rates["fp32, ONNX Runtime"]))
        print(
            f"\n{len(texts)} check texts, {len(passages)} passages; passages/s: median of "
            f"{args.rounds} rounds, the graphs in turn\n"
        )
        print(
            "| graph | check texts min / mean cosine | passages min / mean | passages/s | x fp32 |"
        )
        print("| --- | --- | --- | --- | --- |")
        for label, graph in graphs.items():
            rate = float(np.median(rates[label]))
            if graph == "model.onnx":
                print(f"| {label} | 1 / 1 | 1 / 1 | {rate:.1f} | 1.00 |")
                continue
            low, mean = cosines(work, graph, texts, base_texts)
            plow, pmean = cosines(work, graph, passages, base_passages)
            print(
                f"| {label} | {low:.4f} / {mean:.5f} | {plow:.4f} / {pmean:.5f} | {rate:.1f} "
                f"| {rate / base_rate:.2f} |"
            )
        print("\n" + json.dumps(details, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

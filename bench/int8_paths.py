"""Every reduced-precision path for a CPU graph, against the fp32 search: how much of the fp32
top 10 each keeps, how fast it runs, and whether a vector stays the same in any batch
(docs/benchmarks/2026-12-07-cpu-2core-int8-recall.md, issue 31's recall target).

    python -m bench.int8_paths [--model DIR] [--queries N] [--passages N] [--only LABEL]

The paths, built afresh under /tmp from the directory's model.onnx (never written into DIR):
reduced precision without int8 (fp16, OpenVINO's bf16), NNCF's int8 weights alone (fp32
arithmetic: the floor of any int8-weight graph), the same with OpenVINO's run-time activation
quantisation (DYNAMIC_QUANTIZATION_GROUP_SIZE: scales computed per token and group of inputs
as the graph runs, no calibration), and static int8 (the directory's openvino-int8, and one
calibrated on data/calibration's passages alone). Truth: each query's top 10 by cosine of the
fp32 graph on ONNX Runtime. Columns: min / mean cosine to fp32 over the passages; recall@10
with the path's vectors on both sides and with its queries against the fp32 index; passages/s
of length-sorted batches of 32 (the graph alone, every path in turn, `--rounds` rounds) as a
ratio to ONNX Runtime fp32; and batch invariance: each of `--padded` passages alone against
itself padded beside the longest of them (the service asks cosine 0.99999 in any batch).
Before them, how close the fp32 top 10 is to a tie: the gap between each query's 10th and
11th scores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import ROOT, load, sorted_batches, tokenizer
from bench.quantized import embed, recall, top_k
from service.convert.variants import check_batches, graph_inputs, read_texts

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
INVARIANT = 0.99999  # the cosine tests/test_batch_invariance.py asks of a vector in any batch
Run = Callable[[dict[str, np.ndarray]], np.ndarray]  # feeds -> (batch, dim) vectors


def compress_weights(source: Path, target: Path) -> None:
    """NNCF's int8 weights (asymmetric, per output channel) in every MatMul; the embedding
    tables stay fp32."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(source))
    tables = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Gather"
        and op.input_value(0).get_node().get_type_name() == "Constant"
        and len(op.input_value(0).get_partial_shape()) == 2
    ]
    compressed = nncf.compress_weights(
        model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=nncf.IgnoredScope(tables)
    )
    ov.save_model(compressed, str(target), compress_to_fp16=False)


def static_on_passages(directory: Path, target: Path) -> None:
    """The converter's static int8, calibrated on data/calibration alone (paragraphs and
    headings, long texts included) instead of its first 600 check texts."""
    from service.convert import openvino_int8 as ov_int8

    texts = read_texts(ROOT / "data" / "calibration" / "cpython-docs.jsonl")
    inputs = graph_inputs(directory / "model.onnx")
    samples = check_batches(directory, inputs, texts, size=1, max_length=256)
    ov_int8.quantize(directory / "model.onnx", target, samples)


def paths(directory: Path, work: Path) -> dict[str, tuple[str, Path, dict[str, Any]]]:
    """label -> (runtime, graph, OpenVINO compile options)."""
    weights = work / "int8-weights.xml"
    dynamic = "DYNAMIC_QUANTIZATION_GROUP_SIZE"
    found = {
        "fp32, ONNX Runtime, 1 thread": ("ort1", directory / "model.onnx", {}),
        "fp32, OpenVINO": ("ov", directory / "model.onnx", F32),
        "fp16 (ONNX Runtime)": ("ort", directory / "model.fp16.onnx", {}),
        "bf16 (OpenVINO, avx512_bf16)": (
            "ov",
            directory / "model.onnx",
            {"INFERENCE_PRECISION_HINT": "bf16"},
        ),
        "int8 weights, fp32 arithmetic": ("ov", weights, F32 | {dynamic: 0}),
        "int8 weights, activations per token at run time (group 32)": (
            "ov",
            weights,
            F32 | {dynamic: 32},
        ),
        "the same, group 128": ("ov", weights, F32 | {dynamic: 128}),
        "openvino-int8 (static, the directory's)": ("ov", directory / "model.ov-int8.xml", F32),
        "static int8 calibrated on passages": ("ov", work / "static-passages.xml", F32),
    }
    return {
        label: path for label, path in found.items() if path[1].parent == work or path[1].is_file()
    }


def runner(kind: str, graph: Path, options: dict[str, Any]) -> Run:
    if kind.startswith("ort"):
        from bench.inprocess import embed as pooled
        from bench.inprocess import session

        sess = session(graph, 1 if kind == "ort1" else 2)

        def run_ort(feeds: dict[str, np.ndarray]) -> np.ndarray:
            out = pooled(sess, feeds)
            return out / np.linalg.norm(out, axis=1, keepdims=True)

        return run_ort
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
    compiled = ov.Core().compile_model(str(graph), "CPU", config | options)
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = np.array(request.infer({n: feeds[n] for n in names})[compiled.outputs[0]])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    return run


def vectors(run: Run, directory: Path, texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 0), dtype=np.float32)
    for index, feeds in sorted_batches(tokenizer(directory, 256), texts, 32):
        found = run(feeds)
        out = out if out.shape[1] else np.zeros((len(texts), found.shape[1]), np.float32)
        out[index] = found
    return out


def worst_padded(run: Run, directory: Path, texts: list[str]) -> tuple[float, float]:
    """Each text alone against the same text padded beside the longest of them (its vector
    must not move: the service's batches pad to their longest input): the worst cosine, and
    the share of texts below 0.99999."""
    lengths = [len(e.ids) for e in tokenizer(directory, 256).encode_batch(texts)]
    longest = texts[int(np.argmax(lengths))]
    found = np.array(
        [
            float(vectors(run, directory, [text])[0] @ vectors(run, directory, [text, longest])[0])
            for text in texts
            if text != longest
        ]
    )
    return float(found.min()), float(np.mean(found < INVARIANT))


def rate(run: Run, directory: Path, passages: list[str]) -> float:
    batches = sorted_batches(tokenizer(directory, 256), passages, 32)
    started = time.perf_counter()
    for _, feeds in batches:
        run(feeds)
    return len(passages) / (time.perf_counter() - started)


def ties(queries: np.ndarray, passages: np.ndarray) -> str:
    scores = -np.sort(-(queries @ passages.T), axis=1)[:, :11]
    gap = scores[:, 9] - scores[:, 10]
    return (
        f"fp32 top 10: gap between the 10th and 11th scores median {np.median(gap):.4f} "
        f"(quartile {np.percentile(gap, 25):.4f}); under 0.001 for {np.mean(gap < 0.001):.0%} "
        f"of the queries, under 0.005 for {np.mean(gap < 0.005):.0%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_paths", description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--passages", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--padded", type=int, default=200, help="passages for the padding check")
    parser.add_argument("--only", action="append", default=[], help="labels to run")
    args = parser.parse_args(argv)
    query_texts = load("queries.jsonl", args.queries)
    passage_texts = load("passages.jsonl", args.passages)
    speed_texts = passage_texts[:512]
    padded_texts = load("passages.jsonl", 20788)[3::83][: args.padded]
    queries = embed(args.model, query_texts, 256)
    passages = embed(args.model, passage_texts, 256)
    truth = top_k(queries @ passages.T)
    print(f"\n{ties(queries, passages)}\n")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        chosen = {
            label: path
            for label, path in paths(args.model, work).items()
            if not args.only or label in args.only
        }
        if any(graph.name == "int8-weights.xml" for _, graph, _ in chosen.values()):
            compress_weights(args.model / "model.onnx", work / "int8-weights.xml")
        if any(graph.name == "static-passages.xml" for _, graph, _ in chosen.values()):
            static_on_passages(args.model, work / "static-passages.xml")
        runs = {label: runner(*path) for label, path in chosen.items()}
        base = runner("ort", args.model / "model.onnx", {})
        rates: dict[str, list[float]] = {label: [] for label in ["fp32", *runs]}
        for run in [base, *runs.values()]:
            rate(run, args.model, speed_texts[:64])  # warm-up: OpenVINO compiles per shape
        for _ in range(args.rounds):
            for label, run in {"fp32": base, **runs}.items():
                rates[label].append(rate(run, args.model, speed_texts))
        base_rate = float(np.median(rates["fp32"]))
        print(
            f"{len(query_texts)} queries, {len(passage_texts)} passages; speed: "
            f"{len(speed_texts)} passages, median of {args.rounds} rounds, the paths in turn\n"
        )
        print(
            "| path | min / mean cosine | recall@10 both sides | queries vs fp32 index "
            "| x fp32 | alone vs padded: worst cosine, share below 0.99999 |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for label, run in runs.items():
            q, p = vectors(run, args.model, query_texts), vectors(run, args.model, passage_texts)
            cosine = (p * passages).sum(axis=1)
            worst, moved = worst_padded(run, args.model, padded_texts)
            both, against_fp32 = recall(top_k(q @ p.T), truth), recall(top_k(q @ passages.T), truth)
            print(
                f"| {label} | {cosine.min():.4f} / {cosine.mean():.5f} "
                f"| {both:.3f} | {against_fp32:.3f} "
                f"| {np.median(rates[label]) / base_rate:.2f} "
                f"| {worst:.7f}, {moved:.1%} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

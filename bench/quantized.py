"""How much of the float search quantised vectors and int8 graphs keep: recall@10 of a search
with int8, uint8 or binary vectors, or with the vectors of an int8 graph, against the fp32
float search's top 10, on the bench corpus (CPython docs: section headings as queries,
paragraphs as passages).

    python -m bench.quantized [--model DIR] [--queries N] [--passages N]   (make recall)

The model's fp32 graph embeds the texts as the service serves them (pooled, normalised); the
quantised vectors are the service's own (service/front/serving/quantize.py) with the int8 range the
converter records: measured on its check texts and the bench queries, as `make models` does
(the passages are not among them). Beside them, the earlier per-dimension form (each
dimension scaled from its own [min, max], sentence-transformers' ``quantize_embeddings``),
which the service no longer serves. Each int8 graph variant of the directory (int8,
openvino-int8) embeds the same texts: searched with its own vectors on both sides, with its
queries against the fp32-built index, and with its vectors as int8 outputs. Each query's
fp32 top 10 (cosine) is the truth; recall@10 is the share of it a search finds in its own
top 10, averaged over the queries.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.corpus import CORPUS, ROOT, load, sorted_batches, tokenizer
from bench.inprocess import THREADS, session
from service.convert.calibration import calibrate
from service.convert.variants import CHECK_TEXTS, read_texts
from service.front.serving.quantize import pack_bits, scale_bytes, shared_scale
from service.models.kinds.dense import l2_normalize

K = 10
RESCORE = 4  # binary + rescoring: the float scores of the binary search's top 4 x K
Search = Callable[[np.ndarray], np.ndarray]  # query indices -> (queries, K) passage indices


GRAPH_VARIANTS = ("int8", "openvino-int8")  # the int8 graphs measured when the model has them


def embed(
    directory: Path, texts: list[str], max_length: int, graph: str = "model.onnx"
) -> np.ndarray:
    """(n, dim) served vectors of `texts` by `graph`, in their order."""
    runner = session(directory / graph, THREADS)
    out = np.zeros((len(texts), 0), dtype=np.float32)
    for index, feeds in sorted_batches(tokenizer(directory, max_length), texts, 32):
        vectors = runner.run(feeds)[0]
        if out.shape[1] == 0:
            out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        out[index] = vectors
    return l2_normalize(out)


def top_k(scores: np.ndarray, k: int = K) -> np.ndarray:
    """Indices of the k highest scores per row, best first."""
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of `truth` that the same row of `found` holds."""
    hits = [len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist(), strict=True)]
    return float(np.mean(hits) / truth.shape[1])


def hamming(queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """(q, p) numbers of differing bits between packed sign vectors."""
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)
    return np.stack([table[np.bitwise_xor(q, passages)].sum(axis=1) for q in queries])


def rescored(scores: np.ndarray, q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The top K by float scores among each query's top RESCORE x K by `scores`."""
    wide = top_k(scores.astype(np.float64), RESCORE * K)
    exact = np.einsum("qd,qkd->qk", q, p[wide])
    return np.take_along_axis(wide, top_k(exact), axis=1)


def per_dimension_bytes(vectors: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The earlier uint8 form: each dimension on 256 steps between its own calibrated `low`
    and `high` (sentence-transformers' quantize_embeddings with ranges); int8 is it - 128."""
    steps = np.where(high - low == 0, 1, (high - low) / 255)
    return np.clip(np.floor((vectors - low) / steps), 0, 255).astype(np.uint8)


def euclidean_top_k(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    squared = (q**2).sum(1)[:, None] - 2 * q @ p.T + (p**2).sum(1)[None, :]
    return top_k(-squared)


def searches(
    q: np.ndarray, p: np.ndarray, scale: float, low: np.ndarray, high: np.ndarray
) -> dict[str, np.ndarray]:
    """Each quantised search's top K for every query."""
    # integer vectors as float64: BLAS products, exact at these magnitudes
    qi8, pi8 = (scale_bytes(x, scale, signed=True).astype(np.float64) for x in (q, p))
    qu8, pu8 = (scale_bytes(x, scale, signed=False).astype(np.float64) for x in (q, p))
    qd8, pd8 = (per_dimension_bytes(x, low, high).astype(np.float64) for x in (q, p))
    qb, pb = (pack_bits(x, signed=False) for x in (q, p))
    distances = hamming(qb, pb)
    int8_scores = qi8 @ pi8.T
    norms = np.linalg.norm(qi8, axis=1)[:, None] * np.linalg.norm(pi8, axis=1)[None, :]
    return {
        "int8, dot product": top_k(int8_scores),
        "int8, cosine": top_k(int8_scores / np.maximum(norms, 1e-12)),
        f"int8, top {RESCORE * K} rescored with float": rescored(int8_scores, q, p),
        "uint8, Euclidean distance": euclidean_top_k(qu8, pu8),
        "uint8 - 128, dot product (= int8)": top_k((qu8 - 128) @ (pu8 - 128).T),
        "uint8, plain dot product (zero at 128: biased)": top_k(qu8 @ pu8.T),
        "per-dimension ranges (earlier form), int8 dot product": top_k((qd8 - 128) @ (pd8 - 128).T),
        "per-dimension ranges (earlier form), uint8 Euclidean": euclidean_top_k(qd8, pd8),
        "binary / ubinary, Hamming distance": top_k(-distances.astype(np.float32)),
        f"binary, Hamming top {RESCORE * K} rescored with float": rescored(-distances, q, p),
    }


def graph_searches(
    q: np.ndarray, p: np.ndarray, gq: np.ndarray, gp: np.ndarray, variant: str, scale: float
) -> dict[str, np.ndarray]:
    """The top K of an int8 graph's vectors (`gq`, `gp`): on both sides, its queries against
    the fp32 index, and as int8 outputs on both sides."""
    gi8q, gi8p = (scale_bytes(x, scale, signed=True).astype(np.float64) for x in (gq, gp))
    return {
        f"{variant} graph, queries and passages": top_k(gq @ gp.T),
        f"{variant} graph queries, fp32 index": top_k(gq @ p.T),
        f"{variant} graph, int8 outputs, dot product": top_k(gi8q @ gi8p.T),
    }


def output_cosines(vectors: np.ndarray, scale: float) -> tuple[float, float]:
    """(min, mean) cosine between each vector and its int8 form."""
    levels = scale_bytes(vectors, scale, signed=True).astype(np.float64)
    cosine = (levels * vectors).sum(axis=1) / (
        np.linalg.norm(levels, axis=1) * np.linalg.norm(vectors, axis=1) + 1e-12
    )
    return float(cosine.min()), float(cosine.mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quantized", description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--queries", type=int, default=2670)
    parser.add_argument("--passages", type=int, default=20788)
    args = parser.parse_args(argv)
    metadata = json.loads((args.model / "service_model.json").read_text())
    max_length = int(metadata["spec"].get("max_length", 256))
    started = time.perf_counter()
    calibration_texts = CHECK_TEXTS + read_texts(CORPUS / "queries.jsonl")
    ranges = calibrate(args.model, dict(metadata), calibration_texts)["calibration"]
    low, high = (np.asarray(ranges[k], dtype=np.float32) for k in ("min", "max"))
    scale = shared_scale(ranges)
    query_texts = load("queries.jsonl", args.queries)
    passage_texts = load("passages.jsonl", args.passages)
    queries = embed(args.model, query_texts, max_length)
    passages = embed(args.model, passage_texts, max_length)
    truth = top_k(queries @ passages.T)
    found = searches(queries, passages, scale, low, high)
    for variant in GRAPH_VARIANTS:
        graph = metadata["variants"].get(variant)
        if graph is not None:
            gq = embed(args.model, query_texts, max_length, graph)
            gp = embed(args.model, passage_texts, max_length, graph)
            found |= graph_searches(queries, passages, gq, gp, variant, scale)
    rows = {name: recall(top, truth) for name, top in found.items()}
    low_cos, mean_cos = output_cosines(np.concatenate([queries, passages]), scale)
    report = {
        "model": metadata["spec"]["name"],
        "queries": len(queries),
        "passages": len(passages),
        "calibration_texts": ranges["texts"],
        "int8_scale": scale,
        "int8_output_cosine_to_float": {"min": low_cos, "mean": mean_cos},
        "recall_at_10": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))
    print("\n| vectors, search | recall@10 |\n| --- | --- |")
    for name, value in rows.items():
        print(f"| {name} | {value:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

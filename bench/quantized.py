"""How much of the float search quantised vectors keep: recall@10 of a search with int8,
uint8 or binary vectors against the float search's top 10, on the bench corpus (CPython
docs: section headings as queries, paragraphs as passages).

    python -m bench.quantized [--model DIR] [--queries N] [--passages N]   (make recall)

The model's fp32 graph embeds the texts as the service serves them (pooled, normalised); the
quantised vectors are the service's own (service/front/serving/quantize.py) with the int8 ranges the
converter records: measured on its check texts and the bench queries, as `make models` does
(the passages are not among them). Each query's float top 10 (cosine) is the truth; recall@10
is the share of it a quantised search finds in its own top 10, averaged over the queries.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.corpus import CORPUS, ROOT, load, sorted_batches, tokenizer
from service.convert.calibration import calibrate
from service.convert.variants import CHECK_TEXTS, read_texts
from service.front.serving.quantize import pack_bits, scale_bytes
from service.models.kinds.dense import l2_normalize

K = 10
RESCORE = 4  # binary + rescoring: the float scores of the binary search's top 4 x K
Search = Callable[[np.ndarray], np.ndarray]  # query indices -> (queries, K) passage indices


def embed(directory: Path, texts: list[str], max_length: int) -> np.ndarray:
    """(n, dim) served vectors of `texts`, in their order."""
    session = ort.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = {i.name for i in session.get_inputs()}
    out = np.zeros((len(texts), 0), dtype=np.float32)
    for index, feeds in sorted_batches(tokenizer(directory, max_length), texts, 32):
        vectors = session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
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


def searches(
    q: np.ndarray, p: np.ndarray, low: np.ndarray, high: np.ndarray
) -> dict[str, np.ndarray]:
    """Each quantised search's top K for every query."""
    # integer vectors as float64: BLAS products, exact at these magnitudes
    qi8, pi8 = (scale_bytes(x, low, high, signed=True).astype(np.float64) for x in (q, p))
    qu8, pu8 = (scale_bytes(x, low, high, signed=False).astype(np.float64) for x in (q, p))
    qb, pb = (pack_bits(x, signed=False) for x in (q, p))
    distances = hamming(qb, pb)
    int8_scores = qi8 @ pi8.T
    squared = (qu8**2).sum(1)[:, None] - 2 * qu8 @ pu8.T + (pu8**2).sum(1)[None, :]
    return {
        "int8, dot product": top_k(int8_scores),
        f"int8, top {RESCORE * K} rescored with float": rescored(int8_scores, q, p),
        "uint8, Euclidean distance": top_k(-squared),
        "uint8, dot product": top_k(qu8 @ pu8.T),
        "binary / ubinary, Hamming distance": top_k(-distances.astype(np.float32)),
        f"binary, Hamming top {RESCORE * K} rescored with float": rescored(-distances, q, p),
    }


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
    queries = embed(args.model, load("queries.jsonl", args.queries), max_length)
    passages = embed(args.model, load("passages.jsonl", args.passages), max_length)
    truth = top_k(queries @ passages.T)
    rows = {
        name: recall(found, truth) for name, found in searches(queries, passages, low, high).items()
    }
    report = {
        "model": metadata["spec"]["name"],
        "queries": len(queries),
        "passages": len(passages),
        "calibration_texts": ranges["texts"],
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

"""`python -m bench.multivector`: what compressed multi-vectors keep of late-interaction
search on the bench corpus (../shared/bench/).

No real ColBERT weights exist on these machines, so the multi-vector model is the real
all-MiniLM-L6-v2's token states (its last layer, before the mean pooling of its graph), one
L2-normalised vector per token, [CLS] and [SEP] included. For each query, the passages ranked
by MaxSim over the raw multi-vectors give the reference top 10; each compression ranks the
same passages by its own score (MaxSim over pooled or binarised document rows with the raw
query rows; the dot product of MUVERA encodings, FastEmbed's parameters), and the table gives
the mean share of the reference top 10 it finds in its own top 10, with what a passage costs
to store.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from bench.corpus import ROOT, load, sorted_batches, tokenizer
from service.models import multivector
from service.models.kinds.dense import l2_normalize
from service.models.multivector import Matrix, MuveraParams

TOKEN_STATES = "/model/encoder/layer.5/output/LayerNorm/LayerNormalization_output_0"
TOP = 10
Scorer = Callable[[Matrix], npt.NDArray[np.float64]]  # a query's scores of every passage


def token_session(model: Path) -> ort.InferenceSession:
    """MiniLM's graph with its last layer's token states as an extra output."""
    graph = onnx.load(str(model / "model.onnx"))
    graph.graph.output.append(
        onnx.helper.make_tensor_value_info(TOKEN_STATES, onnx.TensorProto.FLOAT, None)
    )
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def multi_vectors(session: ort.InferenceSession, model: Path, texts: list[str]) -> list[Matrix]:
    """Each text's unit token vectors, (tokens, 384)."""
    found: list[Matrix] = [np.zeros((0, 0), dtype=np.float32)] * len(texts)
    for index, feeds in sorted_batches(tokenizer(model, 256), texts, 32):
        states = session.run([TOKEN_STATES], feeds)[0]
        for row, text_index in enumerate(index):
            length = int(feeds["attention_mask"][row].sum())
            found[text_index] = l2_normalize(states[row, :length])
    return found


def maxsim_scorer(documents: Sequence[Matrix]) -> Scorer:
    """MaxSim of a query against every document, from one product with all their rows."""
    rows = np.concatenate(documents)
    starts = np.cumsum([0, *(len(d) for d in documents[:-1])])

    def score(query: Matrix) -> npt.NDArray[np.float64]:
        best = np.maximum.reduceat(query @ rows.T, starts, axis=1)
        return np.asarray(best.sum(axis=0), dtype=np.float64)

    return score


def muvera_scorer(documents: Sequence[Matrix], params: MuveraParams) -> Scorer:
    encoder = multivector.muvera(params, int(documents[0].shape[1]))
    encoded = np.stack([encoder.encode(d, "document") for d in documents])

    def score(query: Matrix) -> npt.NDArray[np.float64]:
        return np.asarray(encoded @ encoder.encode(query, "query"), dtype=np.float64)

    return score


def reranked(first: Scorer, exact: Scorer, candidates: int) -> Scorer:
    """`first`'s top candidates rescored by `exact` (others rank below them)."""

    def score(query: Matrix) -> npt.NDArray[np.float64]:
        coarse = first(query)
        keep = np.argsort(-coarse, kind="stable")[:candidates]
        scores = np.full(len(coarse), -np.inf)
        scores[keep] = exact(query)[keep]
        return scores

    return score


def top(scores: npt.NDArray[np.float64]) -> set[int]:
    return {int(i) for i in np.argsort(-scores, kind="stable")[:TOP]}


def agreement(queries: Sequence[Matrix], truth: list[set[int]], scorer: Scorer) -> float:
    shares = [len(top(scorer(q)) & t) / TOP for q, t in zip(queries, truth, strict=True)]
    return float(np.mean(shares))


def pooled(documents: Sequence[Matrix], factor: int) -> list[Matrix]:
    with ThreadPoolExecutor(2) as pool:  # scipy-free Ward pooling: numpy, releases the GIL
        return list(pool.map(lambda d: multivector.pool_tokens(d, factor), documents))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.multivector", description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--passages", type=int, default=2000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    session = token_session(args.model)
    queries = multi_vectors(session, args.model, load("queries.jsonl", args.queries))
    documents = multi_vectors(session, args.model, load("passages.jsonl", args.passages))
    dim = int(documents[0].shape[1])
    raw = maxsim_scorer(documents)
    truth = [top(raw(q)) for q in queries]
    rows = np.asarray([len(d) for d in documents], dtype=np.float64)
    print(
        f"all-MiniLM-L6-v2 token states as the multi-vector model (no ColBERT weights here); "
        f"{len(queries)} queries, {len(documents)} passages, {rows.mean():.1f} rows a passage"
    )
    print(f"\n| documents stored as | rows a passage | bytes a passage | top-{TOP} agreement |")
    print("| --- | --- | --- | --- |")
    print(f"| raw float32 rows | {rows.mean():.1f} | {rows.mean() * dim * 4:.0f} | 1.000 |")
    for factor in (2, 3, 4):
        smaller = pooled(documents, factor)
        kept = np.mean([len(d) for d in smaller])
        found = agreement(queries, truth, maxsim_scorer(smaller))
        print(f"| pool_factor {factor} | {kept:.1f} | {kept * dim * 4:.0f} | {found:.3f} |")
    binary = [multivector.unbinarize(multivector.binarize(d), dim) for d in documents]
    found = agreement(queries, truth, maxsim_scorer(binary))
    print(f"| binary rows | {rows.mean():.1f} | {rows.mean() * dim / 8:.0f} | {found:.3f} |")
    both = [multivector.unbinarize(multivector.binarize(d), dim) for d in pooled(documents, 2)]
    kept = np.mean([len(d) for d in both])
    found = agreement(queries, truth, maxsim_scorer(both))
    print(f"| pool_factor 2, binary | {kept:.1f} | {kept * dim / 8:.0f} | {found:.3f} |")
    for params in (MuveraParams(), MuveraParams(k_sim=4, dim_proj=32, r_reps=20)):
        found = agreement(queries, truth, muvera_scorer(documents, params))
        name = f"MUVERA k_sim {params.k_sim}, dim_proj {params.dim_proj}, r_reps {params.r_reps}"
        print(f"| {name} | 1 vector of {params.size} | {params.size * 4} | {found:.3f} |")
    first = reranked(muvera_scorer(documents, MuveraParams()), raw, 100)
    found = agreement(queries, truth, first)
    print(f"| MUVERA (defaults), top 100 reranked by raw MaxSim | + raw rows | | {found:.3f} |")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

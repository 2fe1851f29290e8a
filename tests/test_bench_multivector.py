"""bench/multivector.py's scoring on small random multi-vectors: the one-product MaxSim of
every document equals MaxSim document by document, and the agreement of a scorer with itself
is 1 (the bench's figures run with `make multivector`)."""

from __future__ import annotations

import numpy as np

from bench import multivector as bench
from service.models.kinds.late import maxsim
from service.models.multivector import MuveraParams


def unit(rng: np.random.Generator, rows: int) -> np.ndarray:
    matrix = rng.normal(size=(rows, 16)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_scorers_and_agreement() -> None:
    rng = np.random.default_rng(3)
    documents = [unit(rng, int(rng.integers(1, 9))) for _ in range(30)]
    queries = [unit(rng, 4) for _ in range(5)]
    raw = bench.maxsim_scorer(documents)
    for query in queries:
        expected = [maxsim(query, document) for document in documents]
        np.testing.assert_allclose(raw(query), expected, atol=1e-5)
    truth = [bench.top(raw(q)) for q in queries]
    assert bench.agreement(queries, truth, raw) == 1.0
    first = bench.muvera_scorer(documents, MuveraParams(k_sim=2, dim_proj=8, r_reps=2))
    assert bench.agreement(queries, truth, bench.reranked(first, raw, len(documents))) == 1.0
    assert bench.agreement(queries, truth, bench.reranked(first, raw, 10)) < 1.0

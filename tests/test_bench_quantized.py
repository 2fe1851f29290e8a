"""bench/quantized.py's pieces: top k, recall@k, Hamming distances and the searches."""

from __future__ import annotations

import numpy as np

from bench import quantized
from service.front.serving.quantize import pack_bits


def test_top_k_is_best_first_and_recall_counts_shared_indices() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 1.0, 2.0, 0.0]])
    assert quantized.top_k(scores, 2).tolist() == [[1, 3], [0, 2]]
    assert quantized.recall(np.array([[1, 3], [0, 1]]), np.array([[3, 1], [0, 2]])) == 0.75


def test_hamming_counts_differing_sign_bits() -> None:
    rng = np.random.default_rng(3)
    q, p = rng.normal(size=(4, 20)), rng.normal(size=(6, 20))
    expected = ((q[:, None, :] > 0) != (p[None, :, :] > 0)).sum(axis=2)
    got = quantized.hamming(pack_bits(q, signed=False), pack_bits(p, signed=False))
    assert got.tolist() == expected.tolist()


def test_searches_find_the_float_top_k_on_well_separated_vectors() -> None:
    rng = np.random.default_rng(5)
    passages = rng.normal(size=(200, 32)).astype(np.float32)
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    queries = passages[:20] + 0.01 * rng.normal(size=(20, 32)).astype(np.float32)
    truth = quantized.top_k(queries @ passages.T)
    low, high = passages.min(axis=0), passages.max(axis=0)
    found = quantized.searches(queries, passages, low, high)
    assert len(found) == 6
    for name, top in found.items():
        assert top.shape == (20, quantized.K)
        if name != "uint8, dot product":  # biased by the offsets: the row that shows it
            assert (top[:, 0] == np.arange(20)).mean() >= 0.9, name  # each query's own passage
    rescored = found[f"binary, Hamming top {quantized.RESCORE * quantized.K} rescored with float"]
    assert quantized.recall(rescored, truth) > quantized.recall(
        found["binary / ubinary, Hamming distance"], truth
    )

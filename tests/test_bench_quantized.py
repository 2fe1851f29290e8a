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
    scale = float(np.abs(passages).max()) / 127
    found = quantized.searches(queries, passages, scale, low, high)
    assert len(found) == 10
    for name, top in found.items():
        assert top.shape == (20, quantized.K)
        if "biased" not in name:  # uint8's plain dot product is biased by its offset
            assert (top[:, 0] == np.arange(20)).mean() >= 0.9, name  # each query's own passage
    rescored = found[f"binary, Hamming top {quantized.RESCORE * quantized.K} rescored with float"]
    assert quantized.recall(rescored, truth) > quantized.recall(
        found["binary / ubinary, Hamming distance"], truth
    )


def test_the_shared_scale_keeps_the_ranking_that_per_dimension_offsets_lose() -> None:
    """Uneven dimensions: shifting each by its own minimum biases a dot product, one shared
    scale with zero at zero does not."""
    rng = np.random.default_rng(6)
    spread = rng.uniform(0.2, 3.0, size=48)
    centre = rng.normal(size=48) * 0.5
    passages = (rng.normal(size=(400, 48)) * spread + centre).astype(np.float32)
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    queries = (rng.normal(size=(40, 48)) * spread + centre).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = quantized.top_k(queries @ passages.T)
    scale = float(np.abs(passages).max()) / 127
    low, high = passages.min(axis=0), passages.max(axis=0)
    found = quantized.searches(queries, passages, scale, low, high)
    shared = quantized.recall(found["int8, dot product"], truth)
    earlier = quantized.recall(
        found["per-dimension ranges (earlier form), int8 dot product"], truth
    )
    assert shared >= 0.9 and shared > earlier + 0.1
    low_cos, _ = quantized.output_cosines(passages, scale)
    assert low_cos > 0.99

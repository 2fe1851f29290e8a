"""Compressed multi-vectors: Ward token pooling against scipy's linkage and fcluster, MUVERA
against FastEmbed 0.9.1's Muvera (same seed and parameters), binarised rows against numpy's
packbits; then the `compress` field of /embed/late, /embed/hybrid (a tiny ColBERT and a tiny
BGE-M3) and its errors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from fastembed.postprocess.muvera import Muvera as FastEmbedMuvera
from scipy.cluster.hierarchy import fcluster, linkage

from service.models import multivector
from service.models.multivector import MuveraParams
from tests import late_models as lm
from tests import m3_models
from tests.conftest import serving
from tests.envelope import error_of
from tests.exporting import EXPORT_WARNINGS

pytestmark = EXPORT_WARNINGS
COLBERT = "tiny/colbert"
M3 = m3_models.NAME
TEXTS = ["the cat sat on the mat, the dog sat on the sun", "blue sea and red sky, one two three"]


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    matrix = rng.normal(size=(rows, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def partition(labels: np.ndarray) -> list[list[int]]:
    return sorted(np.flatnonzero(labels == label).tolist() for label in set(labels.tolist()))


@pytest.mark.parametrize("seed", range(12))
def test_ward_clusters_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(2, 90))
    matrix = unit_rows(rng, rows, 16).astype(np.float64)
    distance = np.clip(1 - matrix @ matrix.T, 0, None)
    wanted = max(rows // int(rng.integers(1, 5)), 1)
    condensed = distance[np.triu_indices(rows, k=1)]
    scipy_labels = fcluster(linkage(condensed, method="ward"), t=wanted, criterion="maxclust")
    ours = multivector.ward_clusters(distance, wanted)
    assert partition(ours) == partition(scipy_labels)


def test_pooling_gives_the_means_of_near_rows() -> None:
    rng = np.random.default_rng(7)
    centres = unit_rows(rng, 3, 32)
    rows = np.concatenate([centres[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]]])
    rows = rows + rng.normal(scale=0.01, size=rows.shape).astype(np.float32)
    pooled = multivector.pool_tokens(rows, 4)
    expected = np.stack([rows[i::3].mean(axis=0) for i in range(3)])  # first rows' order
    np.testing.assert_allclose(pooled, expected, atol=1e-6)
    assert multivector.pool_tokens(rows, 1) is rows
    assert multivector.pool_tokens(rows[:1], 4).shape == (1, 32)
    assert multivector.pool_tokens(rows, 64).shape == (1, 32)


@pytest.mark.parametrize(
    ("params", "dim"),
    [
        (MuveraParams(), 32),
        (MuveraParams(k_sim=3, dim_proj=8, r_reps=4, seed=7), 16),
        (MuveraParams(k_sim=4, dim_proj=16, r_reps=3, seed=1), 16),  # no projection
        (MuveraParams(k_sim=6, dim_proj=4, r_reps=2, seed=0), 8),  # many empty buckets
    ],
)
def test_muvera_matches_fastembed(params: MuveraParams, dim: int) -> None:
    reference = FastEmbedMuvera(dim, params.k_sim, params.dim_proj, params.r_reps, params.seed)
    ours = multivector.muvera(params, dim)
    rng = np.random.default_rng(dim)
    for rows in (1, 5, 40):
        matrix = unit_rows(rng, rows, dim)
        document = ours.encode(matrix, "document")
        query = ours.encode(matrix, "query")
        assert document.shape == (reference.embedding_size,) == (params.size,)
        np.testing.assert_allclose(document, reference.process_document(matrix), atol=1e-5)
        np.testing.assert_allclose(query, reference.process_query(matrix), atol=1e-5)


def test_binarised_rows_are_packed_sign_bits() -> None:
    matrix = np.asarray([[0.5, -0.1, 0.0, 2.0, -3.0, 0.1, 0.2, -0.2, 1.0]], dtype=np.float32)
    packed = multivector.binarize(matrix)
    assert packed.tolist() == [[0b10010110, 0b10000000]]
    signs = multivector.unbinarize(packed, 9)
    np.testing.assert_allclose(signs * 3, [[1, -1, -1, 1, -1, 1, 1, -1, 1]])
    query = np.ones((2, 9), dtype=np.float32)
    assert multivector.binary_maxsim(query, packed, 9) == pytest.approx(2 * 1 / 3)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.getbasetemp()
    colbert = lm.built("colbert", root / "late-models")
    m3 = m3_models.built(root / "m3-models")
    with serving(models=[str(colbert.directory), str(m3.directory)]) as test_client:
        yield test_client


def late(client: TestClient, model: str, input_type: str = "document", **extra: object) -> dict:
    body = {"inputs": TEXTS, "model": model, "input_type": input_type, **extra}
    response = client.post("/embed/late", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("model", [COLBERT, M3])
def test_late_route_compresses_as_asked(client: TestClient, model: str) -> None:
    raw = [np.asarray(e["embedding"], dtype=np.float32) for e in late(client, model)["embeddings"]]
    pooled = late(client, model, compress={"pool_factor": 2})["embeddings"]
    for item, matrix in zip(pooled, raw, strict=True):
        expected = multivector.pool_tokens(matrix, 2)
        assert item["type"] == "float" and item["shape"] == list(expected.shape)
        assert item["tokens"] == expected.shape[0] <= matrix.shape[0] // 2
        np.testing.assert_allclose(item["embedding"], expected, atol=1e-6)
    dim = raw[0].shape[1]
    options = {"k_sim": 3, "dim_proj": 8, "r_reps": 5, "seed": 11}
    reference = FastEmbedMuvera(dim, 3, 8, 5, 11)
    for side, encode in (
        ("document", reference.process_document),
        ("query", reference.process_query),
    ):
        found = late(client, model, side, compress={"muvera": options})["embeddings"]
        matrices = raw
        if side == "query":
            queries = late(client, model, "query")["embeddings"]
            matrices = [np.asarray(e["embedding"], dtype=np.float32) for e in queries]
        for item, matrix in zip(found, matrices, strict=True):
            assert item["type"] == "muvera" and item["shape"] == [5 * 8 * 8]
            np.testing.assert_allclose(item["embedding"], encode(matrix), atol=1e-5)
    binary = late(client, model, compress={"binary": True, "pool_factor": 3})["embeddings"]
    for item, matrix in zip(binary, raw, strict=True):
        expected = np.packbits(multivector.pool_tokens(matrix, 3) > 0, axis=-1)
        assert item["type"] == "ubinary" and item["shape"] == list(expected.shape)
        assert item["embedding"] == expected.tolist()


def test_hybrid_compresses_the_late_part(client: TestClient) -> None:
    body = {"inputs": TEXTS, "models": [M3], "compress": {"muvera": {"dim_proj": 8}}}
    found = client.post("/embed/hybrid", json=body).json()["vectors"]
    raw = client.post("/embed/hybrid", json={"inputs": TEXTS, "models": [M3]}).json()["vectors"]
    reference = FastEmbedMuvera(m3_models.lm.HIDDEN, 5, 8, 20, 42)
    for compressed, vectors in zip(found, raw, strict=True):
        expected = reference.process_document(np.asarray(vectors["late"], dtype=np.float32))
        np.testing.assert_allclose(compressed["late"], expected, atol=1e-5)
        np.testing.assert_allclose(compressed["dense"], vectors["dense"], atol=1e-6)
    members = [{"model": COLBERT, "name": "colbert"}, {"model": M3, "name": "m3"}]
    both = client.post(
        "/embed/hybrid",
        json={"inputs": TEXTS[:1], "models": members, "compress": {"binary": True}},
    ).json()["vectors"][0]
    assert set(both) == {"colbert", "m3-dense", "m3-sparse", "m3-late"}
    assert {len(row) for row in both["colbert"]} == {lm.COLBERT_DIM // 8}
    assert {len(row) for row in both["m3-late"]} == {m3_models.lm.HIDDEN // 8}
    dense_only = {"inputs": TEXTS, "models": [M3], "compress": {"muvera": {"dim_proj": 64}}}
    assert "dimension" in error_of(client.post("/embed/hybrid", json=dense_only), 400)["message"]


@pytest.mark.parametrize(
    ("compress", "extra", "fragment"),
    [
        ({"muvera": {}, "binary": True}, {}, "exclude each other"),
        ({"muvera": {"dim_proj": 64}}, {}, "at most the vectors' dimension"),
        ({"muvera": {"k_sim": 10, "dim_proj": 16, "r_reps": 100}}, {}, "the limit is"),
        ({"pool_factor": 2}, {"return_tokens": True}, "return_tokens"),
    ],
)
def test_compression_errors(client: TestClient, compress: dict, extra: dict, fragment: str) -> None:
    body = {"inputs": TEXTS, "model": COLBERT, "compress": compress, **extra}
    response = client.post("/embed/late", json=body)
    assert fragment in error_of(response, 400)["message"]


@pytest.mark.parametrize("compress", [{"pool_factor": 0}, {"muvera": {"k_sim": 11}}, {"x": 1}])
def test_malformed_compression_is_refused(client: TestClient, compress: dict) -> None:
    response = client.post("/embed/late", json={"inputs": TEXTS, "compress": compress})
    assert error_of(response, 400)["param"].startswith("compress")

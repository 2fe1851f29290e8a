"""Compressed multi-vectors: fewer rows, one fixed-size vector, or one bit per value.

- Hierarchical token pooling (``pool_tokens``): Ward clustering of a document's rows by
  cosine distance into ``rows // pool_factor`` clusters, each replaced by the mean of its rows
  (as PyLate and colpali-engine pool ColBERT and ColPali documents).
- MUVERA fixed-dimensional encodings (``Muvera``): per repetition, SimHash buckets of the rows,
  each bucket's sum (queries) or mean (documents; an empty bucket takes the first row of the
  nearest occupied bucket by Hamming distance of bucket ids), projected by a random +-1
  matrix; FastEmbed's ``fastembed.postprocess.muvera.Muvera`` gives the same vector for the
  same parameters and seed. The dot product of a query's and a document's encodings
  approximates their MaxSim score.
- Binarised rows (``binarize``): the sign bit of each value, packed eight to a byte (the
  ``ubinary`` layout of dense vectors); ``binary_maxsim`` scores float queries against them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
Side = Literal["query", "document"]


def pool_tokens(matrix: Matrix, pool_factor: int) -> Matrix:
    """The rows pooled into at most ``max(rows // pool_factor, 1)`` cluster means, in the
    order of each cluster's first row; a factor of 1 (or a single row) keeps them as they are."""
    rows = matrix.shape[0]
    if pool_factor <= 1 or rows <= 1:
        return matrix
    vectors = np.asarray(matrix, dtype=np.float64)
    distance = np.clip(1.0 - vectors @ vectors.T, 0.0, None)
    labels = ward_clusters(distance, max(rows // pool_factor, 1))
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    members = (inverse[None, :] == np.arange(len(first))[:, None]).astype(np.float64)
    means = (members @ vectors) / members.sum(axis=1)[:, None]
    return np.asarray(means[np.argsort(first)], dtype=np.float32)


def ward_clusters(distance: npt.NDArray[np.float64], clusters: int) -> npt.NDArray[np.int64]:
    """A cluster label per row: Ward's agglomerative clustering of a (rows, rows) distance
    matrix, cut where `clusters` remain (scipy's ``linkage(method="ward")`` then ``fcluster(
    criterion="maxclust")``). The merges come from the nearest-neighbour chain, O(rows^2)."""
    merges = ward_merges(distance)
    merges.sort(key=lambda merge: merge[2])
    parent = np.arange(distance.shape[0])

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = int(parent[node])
        return node

    for a, b, _ in merges[: distance.shape[0] - clusters]:
        parent[root(b)] = root(a)
    return np.asarray([root(node) for node in range(distance.shape[0])], dtype=np.int64)


def ward_merges(distance: npt.NDArray[np.float64]) -> list[tuple[int, int, float]]:
    """Ward's merges (a, b, height) of rows' clusters by the nearest-neighbour chain; a merged
    cluster keeps the slot of `a` and the Lance-Williams update gives its distances."""
    rows = distance.shape[0]
    d = np.array(distance, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    size = np.ones(rows)
    merges: list[tuple[int, int, float]] = []
    chain: list[int] = []
    while len(merges) < rows - 1:
        if not chain:
            chain.append(int(np.argmax(size > 0)))  # any cluster still standing
        while True:
            a = chain[-1]
            b = int(np.argmin(d[a]))  # merged-away rows hold inf
            if len(chain) > 1 and d[a, chain[-2]] <= d[a, b]:
                b = chain[-2]
                break
            chain.append(b)
        chain.pop()
        chain.pop()
        height = float(d[a, b])
        total = size[a] + size[b] + size
        updated = np.sqrt(
            np.maximum(
                ((size[a] + size) * d[a] ** 2 + (size[b] + size) * d[b] ** 2 - size * height**2)
                / total,
                0.0,
            )
        )
        d[a], d[:, a] = updated, updated
        d[a, a] = np.inf
        d[b], d[:, b] = np.inf, np.inf
        size[a] += size[b]
        size[b] = 0.0
        merges.append((a, b, height))
    return merges


def binarize(matrix: Matrix) -> npt.NDArray[np.uint8]:
    """(rows, dim) floats -> (rows, ceil(dim / 8)) bytes of sign bits, most significant first."""
    packed: npt.NDArray[np.uint8] = np.packbits(np.asarray(matrix) > 0, axis=-1)
    return packed


def unbinarize(packed: npt.NDArray[np.uint8], dim: int) -> Matrix:
    """Packed sign bits -> rows of +-1 / sqrt(dim): unit vectors, for scoring."""
    bits = np.unpackbits(packed, axis=-1, count=dim).astype(np.float32)
    signs: Matrix = (bits * 2 - 1) / np.float32(np.sqrt(dim))
    return signs


@dataclass(frozen=True)
class MuveraParams:
    """FastEmbed's parameters: 2**k_sim buckets, dim_proj values each, r_reps repetitions."""

    k_sim: int = 5
    dim_proj: int = 16
    r_reps: int = 20
    seed: int = 42

    @property
    def size(self) -> int:
        """Values of one encoding (with dim_proj at most the rows' dimension)."""
        return self.r_reps * (1 << self.k_sim) * self.dim_proj


@dataclass(frozen=True)
class Muvera:
    params: MuveraParams
    dim: int
    hyperplanes: npt.NDArray[np.float64]  # (r_reps, dim, k_sim)
    projections: npt.NDArray[np.int64]  # (r_reps, dim, dim_proj), entries +-1

    def encode(self, matrix: Matrix, side: Side) -> Matrix:
        """One input's fixed-size encoding, (r_reps * 2**k_sim * dim_proj,) float32."""
        vectors = np.asarray(matrix, dtype=np.float64)
        buckets = 2**self.params.k_sim
        powers = 1 << np.arange(self.params.k_sim)
        parts = []
        for rep in range(self.params.r_reps):
            ids = (vectors @ self.hyperplanes[rep] > 0) @ powers
            centers = np.zeros((buckets, self.dim))
            np.add.at(centers, ids, vectors)
            if side == "document":
                centers = fill_documents(centers, ids, vectors)
            if self.params.dim_proj < self.dim:
                centers = (centers @ self.projections[rep]) / np.sqrt(self.params.dim_proj)
            parts.append(centers.reshape(-1))
        return np.concatenate(parts).astype(np.float32)


MAX_K_SIM = 10  # 1024 buckets
POPCOUNT = np.array([value.bit_count() for value in range(1 << MAX_K_SIM)], dtype=np.int64)


def fill_documents(
    centers: npt.NDArray[np.float64], ids: npt.NDArray[Any], vectors: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Bucket sums -> means; an empty bucket takes the first row of the occupied bucket whose
    id is nearest in Hamming distance (the smallest such id on ties)."""
    counts = np.bincount(ids, minlength=len(centers))
    occupied = np.flatnonzero(counts)
    centers[occupied] /= counts[occupied][:, None]
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        nearest = occupied[np.argmin(POPCOUNT[empty[:, None] ^ occupied[None, :]], axis=1)]
        first_row = {int(bucket): int(np.argmax(ids == bucket)) for bucket in set(nearest)}
        centers[empty] = vectors[[first_row[int(bucket)] for bucket in nearest]]
    return centers


@functools.lru_cache(maxsize=16)
def muvera(params: MuveraParams, dim: int) -> Muvera:
    """The random matrices of one parameter set, drawn in FastEmbed's order from NumPy's
    default generator seeded with ``params.seed``; kept for reuse."""
    generator = np.random.default_rng(params.seed)
    hyperplanes = np.stack(
        [generator.normal(size=(dim, params.k_sim)) for _ in range(params.r_reps)]
    )
    projections = generator.choice([-1, 1], size=(params.r_reps, dim, params.dim_proj))
    return Muvera(params, dim, hyperplanes, projections)


def binary_maxsim(query: Matrix, packed: npt.NDArray[np.uint8], dim: int) -> float:
    """MaxSim of float query rows against binarised document rows."""
    if query.shape[0] == 0 or packed.shape[0] == 0:
        return 0.0
    return float((query @ unbinarize(packed, dim).T).max(axis=1).sum())

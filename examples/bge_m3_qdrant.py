"""BGE-M3 with Qdrant: dense, sparse and ColBERT vectors of each passage from one call, searched
with Qdrant's hybrid query.

Indexes bench passages into Qdrant's local in-process mode (``QdrantClient(":memory:")``) with
three named vectors per passage, all from one ``POST /embed/hybrid`` call per batch (one pass
of the model): ``dense`` (cosine), ``sparse`` (BGE-M3's lexical weights, dot product) and
``colbert`` (a multi-vector compared with MaxSim). A query prefetches candidates from the
dense and the sparse vectors, and its ColBERT vectors rerank them.

    python -m service convert BGE_M3_CHECKPOINT models/bge-m3 --name BAAI/bge-m3
    EMBED_MODELS=models/bge-m3 python -m service &
    python examples/bge_m3_qdrant.py --url http://127.0.0.1:8000 --passages 500

Needs `qdrant-client` and `httpx`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import QdrantClient, models

BENCH = Path("/work/shared/bench")
MODEL = "BAAI/bge-m3"
COLLECTION = "passages-m3"
CANDIDATES = 20  # from each of the dense and the sparse vectors


def embed(url: str, texts: Sequence[str], input_type: str) -> list[dict[str, Any]]:
    """Per text: {"dense": [...], "sparse": {"indices", "values"}, "late": [[...], ...]}."""
    response = httpx.post(
        f"{url}/embed/hybrid",
        json={"inputs": list(texts), "input_type": input_type, "models": [MODEL]},
        timeout=300,
    )
    response.raise_for_status()
    return list(response.json()["vectors"])


def qdrant_vector(named: dict[str, Any]) -> dict[str, Any]:
    return {
        "dense": named["dense"],
        "sparse": models.SparseVector(**named["sparse"]),
        "colbert": named["late"],
    }


def create_collection(client: QdrantClient, dim: int) -> None:
    """BGE-M3's dense and ColBERT vectors have the same dimension (1024)."""
    client.create_collection(
        COLLECTION,
        vectors_config={
            "dense": models.VectorParams(size=dim, distance=models.Distance.COSINE),
            "colbert": models.VectorParams(
                size=dim,
                distance=models.Distance.COSINE,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
            ),
        },
        sparse_vectors_config={"sparse": models.SparseVectorParams()},
    )


def index(client: QdrantClient, url: str, passages: Sequence[str], batch: int = 32) -> None:
    for start in range(0, len(passages), batch):
        chunk = passages[start : start + batch]
        vectors = embed(url, chunk, "document")
        if start == 0:
            create_collection(client, len(vectors[0]["dense"]))
        client.upsert(
            COLLECTION,
            [
                models.PointStruct(id=start + i, vector=qdrant_vector(v), payload={"text": text})
                for i, (text, v) in enumerate(zip(chunk, vectors, strict=True))
            ],
        )


def search(
    client: QdrantClient, url: str, queries: Sequence[str], limit: int = 5
) -> list[list[tuple[int, float]]]:
    """(id, MaxSim score) of the best passages per query: dense and sparse candidates,
    reranked by the ColBERT vectors."""
    results = []
    for named in embed(url, queries, "query"):
        vector = qdrant_vector(named)
        response = client.query_points(
            COLLECTION,
            prefetch=[
                models.Prefetch(query=vector["dense"], using="dense", limit=CANDIDATES),
                models.Prefetch(query=vector["sparse"], using="sparse", limit=CANDIDATES),
            ],
            query=vector["colbert"],
            using="colbert",
            limit=limit,
        )
        results.append([(int(point.id), float(point.score)) for point in response.points])
    return results


def read(name: str, count: int) -> list[str]:
    lines = (BENCH / name).read_text().splitlines()[:count]
    return [json.loads(line)["text"] for line in lines]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--passages", type=int, default=500)
    parser.add_argument("--queries", type=int, default=5)
    args = parser.parse_args(argv)
    passages = read("passages.jsonl", args.passages)
    queries = read("queries.jsonl", args.queries)
    client = QdrantClient(":memory:")
    index(client, args.url, passages)
    for query, found in zip(queries, search(client, args.url, queries), strict=True):
        print(f"\n{query}")
        for rank, (point, score) in enumerate(found, 1):
            print(f"  {rank}. [{point}] {score:.3f} {passages[point][:80]}")


if __name__ == "__main__":
    main()

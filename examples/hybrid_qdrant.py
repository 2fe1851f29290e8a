"""Hybrid search with Qdrant: dense + sparse vectors from the running embedding service,
fused with Reciprocal Rank Fusion (RRF).

Indexes bench passages into Qdrant's local in-process mode (``QdrantClient(":memory:")``)
with one dense (all-MiniLM-L6-v2) and one sparse (BM25) named vector per passage, both from
one ``POST /embed/hybrid`` call per batch, then answers queries with RRF over both.

    make run &                                      # or: python -m service
    python examples/hybrid_qdrant.py --url http://127.0.0.1:8000 --passages 500

The service must serve a dense model and Qdrant/bm25, e.g.
EMBED_MODELS=models/all-MiniLM-L6-v2,data/bm25. Needs `qdrant-client` and `httpx`.
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
DENSE = "sentence-transformers/all-MiniLM-L6-v2"
SPARSE = "Qdrant/bm25"
COLLECTION = "passages"


def embed(url: str, texts: Sequence[str], input_type: str) -> list[dict[str, Any]]:
    """Named vectors per text: {"dense": [...], "bm25": {"indices": [...], "values": [...]}}."""
    response = httpx.post(
        f"{url}/embed/hybrid",
        json={
            "inputs": list(texts),
            "input_type": input_type,
            "models": [{"model": DENSE, "name": "dense"}, {"model": SPARSE, "name": "bm25"}],
        },
        timeout=120,
    )
    response.raise_for_status()
    return list(response.json()["vectors"])


def qdrant_vector(named: dict[str, Any]) -> dict[str, Any]:
    return {"dense": named["dense"], "bm25": models.SparseVector(**named["bm25"])}


def create_collection(client: QdrantClient, dim: int) -> None:
    client.create_collection(
        COLLECTION,
        vectors_config={"dense": models.VectorParams(size=dim, distance=models.Distance.COSINE)},
        # BM25 vectors carry term-frequency weights; Qdrant applies the IDF at search time.
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )


def index(client: QdrantClient, url: str, passages: Sequence[str], batch: int = 64) -> None:
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
) -> list[list[int]]:
    """Ids of the best passages per query: RRF over a dense and a BM25 candidate list."""
    results = []
    for named in embed(url, queries, "query"):
        vector = qdrant_vector(named)
        response = client.query_points(
            COLLECTION,
            prefetch=[
                models.Prefetch(query=vector["dense"], using="dense", limit=20),
                models.Prefetch(query=vector["bm25"], using="bm25", limit=20),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            limit=limit,
        )
        results.append([int(point.id) for point in response.points])
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
    for query, ids in zip(queries, search(client, args.url, queries), strict=True):
        print(f"\n{query}")
        for rank, point in enumerate(ids, 1):
            print(f"  {rank}. [{point}] {passages[point][:90]}")


if __name__ == "__main__":
    main()

"""Stand-in application for docker-compose.yml: embeds a few texts through the sidecar's
OpenAI-compatible route and stores them in Qdrant (standard library only)."""

import json
import os
import urllib.request

EMBEDDINGS = os.environ.get("EMBEDDINGS_URL", "http://embeddings:8000")
QDRANT = os.environ.get("QDRANT_URL", "http://qdrant:6333")
KEY = os.environ.get("EMBED_API_KEY", "").split(",")[0]


def call(method: str, url: str, body: object, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


texts = ["Qdrant stores vectors.", "The sidecar turns text into vectors.", "Cats sleep a lot."]
auth = {"Authorization": f"Bearer {KEY}"} if KEY else {}
result = call("POST", f"{EMBEDDINGS}/v1/embeddings",
              {"model": "all-MiniLM-L6-v2", "input": texts}, auth)
vectors = [item["embedding"] for item in result["data"]]
call("PUT", f"{QDRANT}/collections/notes",
     {"vectors": {"size": len(vectors[0]), "distance": "Cosine"}})
points = [{"id": i, "vector": v, "payload": {"text": t}}
          for i, (v, t) in enumerate(zip(vectors, texts, strict=True))]
call("PUT", f"{QDRANT}/collections/notes/points?wait=true", {"points": points})
print(f"stored {len(points)} points of dimension {len(vectors[0])} in Qdrant")

"""Routes: Cohere's POST /v2/embed, POST /v1/embed and POST /v2/rerank (its v1 rerank is
POST /v1/rerank, routes/rerank.py). Errors come in the service's envelope, which Cohere's
SDK keeps as the body of its ApiError."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.front.http.encoding import json_response
from service.front.schemas.cohere import (
    CohereEmbedRequest,
    CohereEmbedResponse,
    CohereRerankResponse,
)
from service.front.schemas.rerank import RerankRequest
from service.front.serving.cohere import embed_by_type, embed_response, meta, response_id
from service.front.serving.rerank import rank_documents

router = APIRouter(tags=["Cohere"])


@router.post("/v2/embed", response_model=CohereEmbedResponse)
async def cohere_embed_v2(body: CohereEmbedRequest, request: Request) -> Response:
    """Cohere's v2 embed (ClientV2.embed): embeddings by type."""
    embeddings, tokens = await embed_by_type(request, body)
    return json_response(embed_response(body, embeddings, tokens, "2"))


@router.post("/v1/embed", response_model=CohereEmbedResponse)
async def cohere_embed_v1(body: CohereEmbedRequest, request: Request) -> Response:
    """Cohere's v1 embed (Client.embed): floats, or embeddings by type when asked for types."""
    embeddings, tokens = await embed_by_type(request, body)
    return json_response(embed_response(body, embeddings, tokens, "1"))


@router.post("/v2/rerank", response_model=CohereRerankResponse)
async def cohere_rerank_v2(body: RerankRequest, request: Request) -> Response:
    """Cohere's v2 rerank (ClientV2.rerank): indices and relevance scores, best first."""
    ranked = await rank_documents(request, body)
    tokens = {"input_tokens": ranked.scored.tokens}
    answer = {
        "id": response_id(),
        "results": ranked.rows,
        "meta": {**meta("2", search_units=1), "tokens": tokens},
    }
    return json_response(answer)

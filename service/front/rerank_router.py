"""Routes: POST /rerank and POST /v1/rerank (Cohere / Jina request and response shapes)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.front import deps
from service.front.encoding import json_response, token_usage
from service.front.inputs import truncation
from service.front.rerank_protocol import RerankRequest, RerankResponse
from service.front.rerank_serving import check_documents, check_top_n, results, score

router = APIRouter(tags=["Reranking"])


@router.post("/rerank", response_model=RerankResponse)
@router.post("/v1/rerank", response_model=RerankResponse)
async def rerank(body: RerankRequest, request: Request) -> Response:
    """Rank documents for a query with a cross-encoder, or by MaxSim with a late model."""
    model = deps.pick_model(request, body.model, "rerank", "late")
    settings = deps.settings(request)
    texts = check_documents(body.query, body.documents, settings)
    check_top_n(body.top_n)
    truncate = truncation(settings, body.truncate)
    scored = await deps.until_disconnect(request, score(model, body, texts, truncate))
    rows = results(scored, texts, body.top_n, body.return_documents)
    usage = token_usage(scored.tokens)
    return json_response({"model": model.name, "results": rows, "usage": usage})

"""Routes: POST /rerank and POST /v1/rerank (Cohere / Jina request and response shapes);
POST /rerank with `texts` instead of `documents` is TEI's, answered in TEI's shape."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import InvalidInput
from service.front.http.encoding import json_response, token_usage
from service.front.schemas.rerank import AnyRerankRequest, RerankRequest, RerankResponse
from service.front.schemas.tei import TeiRank
from service.front.serving.rerank import rank_documents
from service.front.serving.tei import rank

router = APIRouter(tags=["Reranking"])


@router.post("/rerank", response_model=RerankResponse | list[TeiRank])
async def rerank_any(body: AnyRerankRequest, request: Request) -> Response:
    """Rank documents for a query with a cross-encoder, or by MaxSim with a late model; a body
    with `texts` is TEI's, answered as TEI's bare list of {index, score, text}."""
    if body.texts is not None and body.documents is None:
        return json_response(await rank(request, body))
    if body.documents is None:
        raise InvalidInput("documents is required", param="documents")
    fields = body.model_dump(exclude={"texts", "return_text"})
    return await rerank(RerankRequest.model_validate(fields), request)


@router.post("/v1/rerank", response_model=RerankResponse)
async def rerank(body: RerankRequest, request: Request) -> Response:
    """Rank documents for a query with a cross-encoder, or by MaxSim with a late model."""
    ranked = await rank_documents(request, body)
    usage = token_usage(ranked.scored.tokens)
    return json_response({"model": ranked.model.name, "results": ranked.rows, "usage": usage})

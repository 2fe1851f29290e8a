"""Routes: POST /rerank and POST /v1/rerank (Cohere / Jina request and response shapes);
POST /rerank with `texts` instead of `documents` is TEI's, answered in TEI's shape."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import InvalidInput
from service.front import deps
from service.front.encoding import json_response, token_usage
from service.front.inputs import truncation
from service.front.rerank_protocol import AnyRerankRequest, RerankRequest, RerankResponse
from service.front.rerank_serving import check_documents, check_top_n, results, score
from service.front.tei_protocol import TeiRank
from service.front.tei_serving import rank

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
    model = deps.pick_model(request, body.model, "rerank", "late")
    settings = deps.settings(request)
    texts = check_documents(body.query, body.documents, settings)
    check_top_n(body.top_n)
    truncate = truncation(settings, body.truncate)
    scored = await deps.until_disconnect(request, score(model, body, texts, truncate))
    rows = results(scored, texts, body.top_n, body.return_documents)
    usage = token_usage(scored.tokens)
    return json_response({"model": model.name, "results": rows, "usage": usage})

"""Routes: POST /embed/late (ColBERT multi-vectors) and POST /score/maxsim."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.front.http.encoding import json_response, multi_vector_item, token_usage
from service.front.schemas.late import LateRequest, LateResponse, MaxSimRequest, MaxSimResponse
from service.front.serving.late import embed_late, maxsim_scores, resolve_late
from service.front.serving.multivector import (
    check_compression,
    compress,
    compressed_item,
    is_raw,
)
from service.front.serving.rerank import check_documents
from service.front.shared import deps
from service.front.shared.inputs import texts_call, truncation

router = APIRouter(tags=["Late interaction"])


@router.post("/embed/late", response_model=LateResponse)
async def embed_late_route(body: LateRequest, request: Request) -> Response:
    """One L2-normalised vector per token, with ColBERT's query and document rules."""
    call = texts_call(request, body, ("late", "m3"))
    model, texts = call.model, call.texts
    if not is_raw(body.compress):
        check_compression(body.compress, model, body.return_tokens)
    queries, documents = (texts, []) if body.input_type == "query" else ([], texts)
    result = await deps.until_disconnect(
        request,
        embed_late(
            model, queries, documents, truncate=call.truncate, with_tokens=body.return_tokens
        ),
    )
    if is_raw(body.compress):
        embeddings = [
            multi_vector_item(i, m, body.encoding_format) for i, m in enumerate(result.matrices)
        ]
    else:
        sides = [body.input_type] * len(result.matrices)
        found = await compress(result.matrices, body.compress, sides)
        embeddings = [compressed_item(i, f, body.encoding_format) for i, f in enumerate(found)]
    for item, strings in zip(embeddings, result.token_strings, strict=False):
        item["token_strings"] = strings
    usage = token_usage(result.tokens)
    return json_response(
        {"model": model.name, "dim": model.spec.dim, "embeddings": embeddings, "usage": usage}
    )


@router.post("/score/maxsim", response_model=MaxSimResponse)
async def maxsim_route(body: MaxSimRequest, request: Request) -> Response:
    """MaxSim scores of documents for a query: texts (embedded with a late model) or
    precomputed multi-vectors, mixed freely."""
    settings = deps.settings(request)
    texts = check_documents(body.query, body.documents, settings)
    needs_model = bool(texts) or isinstance(body.query, str)
    model = deps.pick_model(request, body.model, "late", "m3") if needs_model else None
    truncate = truncation(settings, body.truncate)
    query, documents, tokens = await deps.until_disconnect(
        request, resolve_late(model, body.query, body.documents, truncate=truncate)
    )
    scores = maxsim_scores(query, documents)
    usage = token_usage(tokens)
    return json_response({"model": model and model.name, "scores": scores, "usage": usage})

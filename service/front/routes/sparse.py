"""Routes: POST /embed/sparse (SPLADE, BM25, BM42, miniCOIL) and POST /embed/hybrid (named
vectors of several models in one call)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import InvalidInput
from service.front.http.encoding import json_response, token_usage
from service.front.schemas.sparse import (
    ChunkedSparseResponse,
    HybridRequest,
    HybridResponse,
    SparseRequest,
    SparseResponse,
)
from service.front.serving.chunk_render import sparse_documents
from service.front.serving.chunking import chunk_rules, embed_sparse_chunks
from service.front.serving.hybrid import HybridOptions, Member, embed_hybrid, vector_names
from service.front.serving.multivector import check_compression, is_raw
from service.front.serving.sparse import embed_sparse, render
from service.front.shared import deps
from service.front.shared.inputs import INPUT, INPUTS, as_list, check_texts, texts_call, truncation

router = APIRouter()
HYBRID_KINDS = ("dense", "sparse", "late", "m3")


@router.post(
    "/embed/sparse", response_model=SparseResponse | ChunkedSparseResponse, tags=["Embeddings"]
)
async def sparse_embeddings(body: SparseRequest, request: Request) -> Response:
    """Sparse vectors (indices sorted ascending); an empty input gets an empty vector. With
    `chunking`, vectors of each input's chunks (docs/long-documents.md)."""
    call = texts_call(request, body, ("sparse", "m3"), INPUTS)
    model = call.model
    if body.chunking is not None:
        rules = chunk_rules(model, body.chunking, deps.settings(request))
        chunked = await deps.until_disconnect(
            request, embed_sparse_chunks(model, call.texts, rules, body.input_type)
        )
        documents = sparse_documents(chunked, body.chunking.pool, body.return_tokens)
        usage = token_usage(chunked.tokens)
        return json_response({"model": model.name, "documents": documents, "usage": usage})
    result = await deps.until_disconnect(
        request,
        embed_sparse(
            model,
            call.texts,
            input_type=body.input_type,
            truncate=call.truncate,
            language=body.language,
            limit=body.token_limit,
        ),
    )
    embeddings = [render(vector, body.return_tokens) for vector in result.vectors]
    usage = token_usage(result.tokens)
    return json_response({"model": model.name, "embeddings": embeddings, "usage": usage})


@router.post("/embed/hybrid", response_model=HybridResponse, tags=["Embeddings"])
async def hybrid_embeddings(body: HybridRequest, request: Request) -> Response:
    """Dense, sparse and multi-vectors of several models per input, named for Qdrant's named
    vectors; a BGE-M3 member gives its three from one run of the model."""
    asked = [(m, None) if isinstance(m, str) else (m.model, m.name) for m in body.models]
    models = [deps.pick_model(request, name, *HYBRID_KINDS) for name, _ in asked]
    names = vector_names(models, [given for _, given in asked])
    texts = as_list(body.inputs)
    settings = deps.settings(request)
    only_sparse = all(m.spec.kind == "sparse" for m in models)  # the others refuse empty texts
    check_texts(texts, settings, INPUTS if only_sparse else INPUT)
    multi = [model for model in models if model.spec.kind in ("late", "m3")]
    if not multi and not is_raw(body.compress):
        raise InvalidInput("compress applies to late and BGE-M3 members", param="compress")
    for model in multi:
        check_compression(body.compress, model)
    options = HybridOptions(
        body.input_type,
        truncation(settings, body.truncate),
        body.language,
        body.return_tokens,
        body.compress,
    )
    members = [Member(name, model) for name, model in zip(names, models, strict=True)]
    rows, tokens = await deps.until_disconnect(request, embed_hybrid(members, texts, options))
    chosen = {m.name: m.model.name for m in members}
    return json_response({"models": chosen, "vectors": rows, "usage": token_usage(tokens)})

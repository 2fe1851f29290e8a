"""Route: POST /embed/multimodal (ColPali: page images and queries into multi-vectors)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.front.http.encoding import json_response, multi_vector_item
from service.front.schemas.inline import inline_schema
from service.front.schemas.multimodal import MultimodalRequest, MultimodalResponse
from service.front.serving.multimodal import embed_multimodal, read_multimodal_request
from service.front.serving.multivector import (
    check_compression,
    compress,
    compressed_item,
    is_raw,
)
from service.front.shared import deps
from service.models.kinds.multimodal import maxsim
from service.models.multivector import Side

router = APIRouter()
OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": inline_schema(MultimodalRequest)}},
    }
}


@router.post(
    "/embed/multimodal",
    response_model=MultimodalResponse,
    tags=["Embeddings"],
    openapi_extra=OPENAPI_BODY,
)
async def embed_multimodal_route(request: Request) -> Response:
    """Multi-vector embeddings of page images and text queries, with MaxSim scores."""
    settings = deps.settings(request)
    inputs = await read_multimodal_request(request, settings)
    model = deps.pick_model(request, inputs.model, "multimodal")
    check_compression(inputs.compression, model)
    queries, pages = await deps.until_disconnect(request, embed_multimodal(model, inputs, settings))
    both = bool(queries) and bool(pages) and inputs.scores
    fmt = inputs.encoding_format
    if is_raw(inputs.compression):
        query_items = [multi_vector_item(i, q, fmt) for i, q in enumerate(queries)]
        page_items = [multi_vector_item(i, p, fmt) for i, p in enumerate(pages)]
    else:
        query_side: list[Side] = ["query"]
        document_side: list[Side] = ["document"]
        sides = query_side * len(queries) + document_side * len(pages)
        found = await compress([*queries, *pages], inputs.compression, sides)
        items = [compressed_item(i, f, fmt) for i, f in enumerate(found)]
        query_items, page_items = items[: len(queries)], items[len(queries) :]
        for index, item in enumerate(page_items):
            item["index"] = index
    return json_response(
        {
            "object": "multimodal_embeddings",
            "model": model.name,
            "dim": model.spec.dim,
            "queries": query_items,
            "images": page_items,
            "scores": maxsim(queries, pages) if both else None,
            "usage": {"images": len(pages), "query_tokens": sum(len(q) for q in queries)},
        }
    )

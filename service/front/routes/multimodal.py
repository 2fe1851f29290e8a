"""Route: POST /embed/multimodal (ColPali: page images and queries into multi-vectors)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.front.http.encoding import json_response, multi_vector_item
from service.front.schemas.multimodal import MultimodalRequest, MultimodalResponse
from service.front.serving.multimodal import embed_multimodal, read_multimodal_request
from service.front.shared import deps
from service.models.kinds.multimodal import maxsim

router = APIRouter()
OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": MultimodalRequest.model_json_schema()}},
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
    queries, pages = await deps.until_disconnect(request, embed_multimodal(model, inputs, settings))
    both = bool(queries) and bool(pages) and inputs.scores
    fmt = inputs.encoding_format
    return json_response(
        {
            "object": "multimodal_embeddings",
            "model": model.name,
            "dim": model.spec.dim,
            "queries": [multi_vector_item(i, q, fmt) for i, q in enumerate(queries)],
            "images": [multi_vector_item(i, p, fmt) for i, p in enumerate(pages)],
            "scores": maxsim(queries, pages) if both else None,
            "usage": {"images": len(pages), "query_tokens": sum(len(q) for q in queries)},
        }
    )

"""Route: POST /embed/image (JSON with base64 images, or a multipart upload)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.front.http.encoding import encode_vectors, json_response
from service.front.schemas.image import OPENAPI_BODY, ImageResponse
from service.front.serving.dense import shape_vectors
from service.front.serving.image import embed_images, read_image_request
from service.front.shared import deps

router = APIRouter()


@router.post(
    "/embed/image", response_model=ImageResponse, tags=["Embeddings"], openapi_extra=OPENAPI_BODY
)
async def embed_image(request: Request) -> Response:
    """Image embeddings, e.g. CLIP's image tower (its text tower is served on /embed/dense)."""
    settings = deps.settings(request)
    body = await read_image_request(request, settings)
    model = deps.pick_model(request, body.model, "image")
    raw = await deps.until_disconnect(request, embed_images(model, body.images, settings))
    normalize = model.spec.normalize if body.normalize is None else body.normalize
    vectors = shape_vectors(raw, normalize=normalize, dimensions=None, dim=model.spec.dim)
    return json_response(
        {
            "model": model.name,
            "dim": int(vectors.shape[1]),
            "embeddings": encode_vectors(vectors, body.encoding_format),
            "usage": {"images": len(body.images)},
        }
    )

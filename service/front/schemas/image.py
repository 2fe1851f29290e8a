"""Schemas of POST /embed/image: a JSON body with base64 images, or a multipart upload."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.front.schemas.inline import inline_schema

EncodingFormat = Literal["float", "base64"]


class ImageJsonRequest(BaseModel):
    """The JSON form. A multipart form takes the same fields as form fields, and the images
    as file parts (any field name, in order)."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(
        default_factory=list,
        description="Images as base64 strings or data URIs (data:image/png;base64,...).",
    )
    urls: list[str] = Field(
        default_factory=list,
        description="http(s) URLs of images, fetched by the service when EMBED_IMAGE_FETCH_URLS "
        "is on (off by default); embedded after `images`.",
    )
    model: str | None = Field(None, description="A served image model; default: the first one.")
    normalize: bool | None = Field(None, description="L2-normalise (default: the model's own).")
    encoding_format: EncodingFormat = "float"


class ImageUsage(BaseModel):
    images: int


class ImageResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]] | list[str]
    usage: ImageUsage


# The route reads its body itself (to stop oversized uploads early), so its OpenAPI request
# body is declared here.
OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_schema(ImageJsonRequest)},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "model": {"type": "string"},
                        "normalize": {"type": "boolean"},
                        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                    },
                    "required": ["images"],
                }
            },
        },
    }
}

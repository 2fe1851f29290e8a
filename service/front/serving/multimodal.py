"""POST /embed/multimodal logic: pages (images) and queries into multi-vectors, and MaxSim."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import Request
from pydantic import ValidationError

from service.errors import InvalidInput
from service.front.schemas.image import EncodingFormat
from service.front.schemas.multimodal import MultimodalRequest
from service.front.schemas.multivector import Compression
from service.front.serving.image import (
    check_count,
    check_form_fields,
    decode_base64,
    form_encoding_format,
    parse_json,
    read_body,
    read_form,
)
from service.front.shared.inputs import QUERIES, check_texts
from service.models.kinds.multimodal import MultiVectors
from service.models.loaded import LoadedModel
from service.settings import Settings


@dataclass(frozen=True)
class MultimodalInputs:
    queries: list[str]
    images: list[bytes]
    model: str | None
    scores: bool
    encoding_format: EncodingFormat = "float"
    compression: Compression | None = None


async def read_multimodal_request(request: Request, settings: Settings) -> MultimodalInputs:
    media_type, body = await read_body(request, "application/json or multipart/form-data")
    if media_type == "application/json":
        parsed = parse_json(MultimodalRequest, body)
        if parsed.images:
            check_count(len(parsed.images), settings)
        images = [decode_base64(i, text, settings) for i, text in enumerate(parsed.images)]
        inputs = MultimodalInputs(
            parsed.queries,
            images,
            parsed.model,
            parsed.scores,
            parsed.encoding_format,
            parsed.compress,
        )
    else:
        images, fields = await read_form(request, body, settings, settings.max_inputs_per_request)
        known = {"queries", "model", "encoding_format", "compress"}
        check_form_fields((key for key, _ in fields), known)
        queries = [value for key, value in fields if key == "queries"]
        model = next((value for key, value in fields if key == "model"), None)
        wanted = next((value for key, value in fields if key == "encoding_format"), "float")
        encoding_format = form_encoding_format(wanted)
        compression = form_compression(next((v for k, v in fields if k == "compress"), None))
        inputs = MultimodalInputs(
            queries, images, model or None, True, encoding_format, compression
        )
    check_texts(inputs.queries, settings, QUERIES)
    if not inputs.queries and not inputs.images:
        raise InvalidInput("send queries, images, or both", param="queries")
    return inputs


def form_compression(value: str | None) -> Compression | None:
    """The form's `compress` field: the JSON of the `compress` object (400 when malformed)."""
    if value is None:
        return None
    try:
        return Compression.model_validate_json(value)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(
            f"compress: {where + ': ' if where else ''}{first['msg']}", param="compress"
        ) from None


async def embed_multimodal(
    model: LoadedModel, inputs: MultimodalInputs, settings: Settings
) -> tuple[list[MultiVectors], list[MultiVectors]]:
    """Queries and pages through the model's batcher (prepared in its threads), concurrently."""
    assert model.batcher is not None
    batcher = model.batcher
    max_pixels = settings.image_max_pixels
    sides = model.handler.sides
    assert sides is not None, f"{model.name} is not a multimodal model"
    queries, pages = await asyncio.gather(
        batcher.submit(lambda: sides.queries(model, inputs.queries)),
        batcher.submit(lambda: sides.pages(model, inputs.images, max_pixels)),
    )
    return queries, pages

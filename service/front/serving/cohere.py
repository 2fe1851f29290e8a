"""Cohere's embed and rerank: the request's options checked and mapped onto the service's
own dense embedding and reranking, and the answers in Cohere's shapes."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request

from service.errors import InvalidInput
from service.front.http.encoding import encode_vectors
from service.front.schemas.cohere import PROMPT_NAMES, CohereEmbedRequest
from service.front.serving.dense import embed, shape_vectors
from service.front.serving.quantize import check_scale, quantized, typed_rows
from service.front.shared import deps
from service.front.shared.inputs import TextField, check_texts, truncation
from service.front.shared.prompts import with_prompt
from service.settings import Settings

TEXTS = TextField("texts", "text", "texts")


def meta(
    version: str, *, input_tokens: int | None = None, search_units: int | None = None
) -> dict[str, Any]:
    units = {"input_tokens": input_tokens, "search_units": search_units}
    return {
        "api_version": {"version": version},
        "billed_units": {k: v for k, v in units.items() if v is not None},
    }


def response_id() -> str:
    return str(uuid.uuid4())


def checked_texts(body: CohereEmbedRequest, settings: Settings) -> list[str]:
    if body.images is not None or body.inputs is not None:
        raise InvalidInput(
            "this route embeds texts; images go to POST /embed/image",
            param="images" if body.images is not None else "inputs",
        )
    if body.texts is None:
        raise InvalidInput("texts is required", param="texts")
    check_texts(body.texts, settings, TEXTS)
    return body.texts


def cohere_truncation(settings: Settings, value: str | None) -> bool:
    if value == "START":
        raise InvalidInput(
            "truncate START is not supported: inputs are cut at their end (END) or refused (NONE)",
            param="truncate",
        )
    return truncation(settings, None if value is None else value == "END")


async def embed_by_type(request: Request, body: CohereEmbedRequest) -> tuple[dict[str, Any], int]:
    """Every asked embedding type of the texts, by type name, and the tokens they took."""
    model = deps.pick_model(request, body.model, "dense", "m3")
    settings = deps.settings(request)
    texts = checked_texts(body, settings)
    truncate = cohere_truncation(settings, body.truncate)
    types = body.embedding_types or ["float"]
    for name in types:
        check_scale(name, dimensions=body.output_dimension, renormalised=False)
    prompted = with_prompt(model, texts, PROMPT_NAMES.get(body.input_type or ""))
    result = await deps.until_disconnect(
        request, embed(model, prompted, input_type=None, truncate=truncate)
    )
    vectors = shape_vectors(
        result.vectors,
        normalize=model.spec.normalize,
        dimensions=body.output_dimension,
        dim=model.spec.dim,
    )
    embeddings: dict[str, Any] = {}
    for name in dict.fromkeys(types):
        if name == "base64":
            embeddings[name] = encode_vectors(vectors, "base64")
        else:
            embeddings[name] = typed_rows(quantized(model, vectors, name), "float")
    return embeddings, result.tokens


def embed_response(
    body: CohereEmbedRequest, embeddings: dict[str, Any], tokens: int, version: str
) -> dict[str, Any]:
    """v2's answer, and v1's: by type when embedding_types was sent, else floats alone."""
    floats_only = version == "1" and body.embedding_types is None
    return {
        "id": response_id(),
        "response_type": "embeddings_floats" if floats_only else "embeddings_by_type",
        "embeddings": embeddings["float"] if floats_only else embeddings,
        "texts": body.texts,
        "meta": meta(version, input_tokens=tokens),
    }

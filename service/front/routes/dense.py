"""Routes: POST /v1/embeddings (OpenAI) and POST /embed/dense (native)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import InvalidInput
from service.front.http.encoding import encode_vectors, json_response, token_usage
from service.front.schemas.embeddings import (
    ChunkedDenseResponse,
    DenseRequest,
    DenseResponse,
    EmbeddingRequest,
    EmbeddingResponse,
)
from service.front.serving.chunk_render import dense_body
from service.front.serving.chunking import chunk_rules, embed_dense_chunks
from service.front.serving.dense import embed, shape_vectors
from service.front.serving.quantize import check_scale, quantized, typed_rows
from service.front.shared import deps
from service.front.shared.inputs import check_count, check_texts, texts_call

router = APIRouter()
TOKEN_IDS_REFUSED = (
    "input holds token ids, which this service does not take by default: clients that send ids "
    "send OpenAI's tiktoken ids, which the served model would read as other words. LangChain's "
    "OpenAIEmbeddings does so unless created with check_embedding_ctx_length=False: pass that "
    "(and model= a model of GET /v1/models). To send ids of the served model's own vocabulary, "
    "start the service with EMBED_TOKEN_ID_INPUTS=true"
)


def _openai_inputs(value: str | list[str] | list[int] | list[list[int]]) -> Sequence[object]:
    if isinstance(value, str):
        value = [value]
    if not value:
        raise InvalidInput("input must not be empty", param="input")
    if isinstance(value[0], int):
        return [value]  # one pre-tokenized input
    for index, item in enumerate(value):
        if isinstance(item, list) and not item:
            raise InvalidInput(f"input {index} is an empty list of token ids", param="input")
    return value


@router.post("/v1/embeddings", response_model=EmbeddingResponse, tags=["OpenAI"])
async def openai_embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """OpenAI-compatible embeddings: works with the official SDKs."""
    settings = deps.settings(request)
    inputs = _openai_inputs(body.input)
    if not isinstance(inputs[0], str) and not settings.token_id_inputs:
        raise InvalidInput(TOKEN_IDS_REFUSED, param="input", code="token_ids_refused")
    model = deps.pick_model(request, body.model, "dense", "m3")
    if isinstance(inputs[0], str):
        check_texts(inputs, settings)  # type: ignore[arg-type]
    else:
        limit = settings.max_inputs_per_request
        check_count(len(inputs), limit, items="inputs", param="input", empty=None)
    result = await deps.until_disconnect(
        request,
        embed(model, inputs, input_type=None, truncate=settings.truncate),  # type: ignore[arg-type]
    )
    vectors = shape_vectors(
        result.vectors,
        normalize=model.spec.normalize,
        dimensions=body.dimensions,
        dim=model.spec.dim,
    )
    data = [
        {"object": "embedding", "index": i, "embedding": e}
        for i, e in enumerate(encode_vectors(vectors, body.encoding_format))
    ]
    return json_response(
        {"object": "list", "data": data, "model": model.name, "usage": token_usage(result.tokens)}
    )


@router.post(
    "/embed/dense", response_model=DenseResponse | ChunkedDenseResponse, tags=["Embeddings"]
)
async def embed_dense(body: DenseRequest, request: Request) -> Response:
    """Dense embeddings with query/document prefixes, truncation and normalisation options;
    with `chunking`, vectors of each input's chunks (docs/long-documents.md)."""
    call = texts_call(request, body, ("dense", "m3"))
    model = deps.registry(request).encoder_for(call.model, body.input_type)
    renormalised = body.normalize not in (None, model.spec.normalize)
    check_scale(body.embedding_type, dimensions=body.dimensions, renormalised=renormalised)
    if body.chunking is not None:
        if body.embedding_type != "float":
            raise InvalidInput(
                "embedding_type applies to unchunked inputs; chunks come as float vectors",
                param="embedding_type",
            )
        rules = chunk_rules(model, body.chunking, deps.settings(request))
        chunked = await deps.until_disconnect(
            request, embed_dense_chunks(model, call.texts, rules, body.input_type)
        )
        usage = token_usage(chunked.tokens)
        return json_response({**dense_body(model, chunked, body), "usage": usage})
    result = await deps.until_disconnect(
        request,
        embed(
            model,
            call.texts,
            input_type=body.input_type,
            truncate=call.truncate,
            limit=body.token_limit,
        ),
    )
    normalize = model.spec.normalize if body.normalize is None else body.normalize
    vectors = shape_vectors(
        result.vectors, normalize=normalize, dimensions=body.dimensions, dim=model.spec.dim
    )
    typed = quantized(model, vectors, body.embedding_type)
    return json_response(
        {
            "model": model.name,
            "dim": int(vectors.shape[1]),
            "embeddings": typed_rows(typed, body.encoding_format),
            "usage": token_usage(result.tokens),
        }
    )

"""Routes of text-embeddings-inference (TEI): POST /embed (and POST /, where TEI serves its
model's task), /embed_sparse, /embed_all, /tokenize, /decode and GET /info; its POST /rerank
with texts is served by routes/rerank.py. Answers and errors in TEI's shapes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.front.http.encoding import json_response
from service.front.schemas.tei import (
    TeiDecodeRequest,
    TeiEmbedRequest,
    TeiInfo,
    TeiSparseRequest,
    TeiSparseValue,
    TeiToken,
    TeiTokenizeRequest,
)
from service.front.serving.tei import (
    TEXT_KINDS,
    check_ids,
    checked_inputs,
    decode,
    embed_pooled,
    embed_sparse_values,
    embed_tokens,
    id_batch,
    info,
    prompted,
    tokenize,
)
from service.front.shared import deps

router = APIRouter(tags=["TEI"])


@router.post("/embed", response_model=list[list[float]])
async def tei_embed(body: TeiEmbedRequest, request: Request) -> Response:
    """TEI's embed: one pooled vector per input, as a bare list."""
    return json_response(list(await embed_pooled(request, body)))


@router.post("/", response_model=list[list[float]], include_in_schema=False)
async def tei_root(body: TeiEmbedRequest, request: Request) -> Response:
    """POST / is TEI's embed too (huggingface_hub's InferenceClient posts to the bare URL)."""
    return json_response(list(await embed_pooled(request, body)))


@router.post("/embed_sparse", response_model=list[list[TeiSparseValue]])
async def tei_embed_sparse(body: TeiSparseRequest, request: Request) -> Response:
    """TEI's embed_sparse: each input's non-zero {index, value} pairs."""
    return json_response(await embed_sparse_values(request, body))


@router.post("/embed_all", response_model=list[list[list[float]]])
async def tei_embed_all(body: TeiSparseRequest, request: Request) -> Response:
    """TEI's embed_all: one vector per token, from a late-interaction model."""
    return json_response(await embed_tokens(request, body))


@router.post("/tokenize", response_model=list[list[TeiToken]])
async def tei_tokenize(body: TeiTokenizeRequest, request: Request) -> Response:
    """TEI's tokenize: ids, the text each token covers, byte offsets; never truncated."""
    model = deps.pick_model(request, body.model, *TEXT_KINDS)
    texts = prompted(model, checked_inputs(request, body.inputs), body.prompt_name)
    return json_response(await tokenize(request, model, texts, body.add_special_tokens))


@router.post("/decode", response_model=list[str])
async def tei_decode(body: TeiDecodeRequest, request: Request) -> Response:
    """TEI's decode: token ids back to text."""
    model = deps.pick_model(request, body.model, *TEXT_KINDS)
    batch = id_batch(body.ids)
    check_ids(model, batch, deps.settings(request))
    return json_response(await decode(model, batch, body.skip_special_tokens))


@router.get("/info", response_model=TeiInfo)
async def tei_info(request: Request, model: str | None = None) -> Response:
    """TEI's info: the model (the first text model, or ?model=) and the service's limits."""
    served = deps.pick_model(request, model, *TEXT_KINDS)
    return json_response(info(served, deps.settings(request), request.app.version))

"""text-embeddings-inference's routes on the service's own models: each request's options
checked and mapped onto dense, sparse, late and rerank serving, and the answers in TEI's
shapes. Errors on these routes come in TEI's shape (service/front/http/errors.py)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from fastapi import Request
from tokenizers import Tokenizer

from service.errors import InvalidInput
from service.front.http.encoding import Floats
from service.front.schemas.rerank import AnyRerankRequest
from service.front.schemas.tei import TeiEmbedRequest, TeiSparseRequest
from service.front.serving.dense import embed, shape_vectors
from service.front.serving.late import embed_late
from service.front.serving.rerank import check_documents, ranked, score
from service.front.serving.sparse import embed_sparse
from service.front.shared import deps
from service.front.shared.inputs import INPUTS, as_list, check_count, check_texts, truncation
from service.front.shared.prompts import prompts
from service.models.kinds.encoded import InputType
from service.models.loaded import LoadedModel
from service.models.text import TextEncoder
from service.settings import Settings

TEXT_KINDS = ("dense", "sparse", "rerank", "late")
DTYPES = {"int8": "int8", "fp16": "float16"}  # graph variant -> TEI's model_dtype


def answer_as_tei(request: Request) -> None:
    """Errors of this request from here on come in TEI's shape (POST /rerank with texts)."""
    request.scope.setdefault("state", {})["error_style"] = "tei"


def check_direction(direction: str) -> None:
    if direction.lower() != "right":
        raise InvalidInput(
            "truncation_direction left is not supported: inputs are cut at their end",
            param="truncation_direction",
        )


def prompted(model: LoadedModel, texts: list[str], name: str | None) -> list[str]:
    """`texts` behind the named prompt; 400 for a name the model has no prompt for."""
    if name is None:
        return texts
    known = prompts(model)
    if name not in known:
        raise InvalidInput(
            f"prompt_name {name!r} is not a prompt of {model.name!r} (it has {sorted(known)})",
            param="prompt_name",
        )
    return [known[name] + text for text in texts]


def checked_inputs(request: Request, inputs: str | list[str]) -> list[str]:
    texts = as_list(inputs)
    check_texts(texts, deps.settings(request), INPUTS)
    return texts


async def embed_pooled(request: Request, body: TeiEmbedRequest) -> Floats:
    """POST /embed: one pooled vector per input."""
    model = deps.pick_model(request, body.model, "dense")
    texts = checked_inputs(request, body.inputs)
    check_direction(body.truncation_direction)
    truncate = truncation(deps.settings(request), body.truncate)
    work = embed(
        model, prompted(model, texts, body.prompt_name), input_type=None, truncate=truncate
    )
    result = await deps.until_disconnect(request, work)
    return shape_vectors(
        result.vectors, normalize=body.normalize, dimensions=body.dimensions, dim=model.spec.dim
    )


async def embed_sparse_values(
    request: Request, body: TeiSparseRequest
) -> list[list[dict[str, Any]]]:
    """POST /embed_sparse: each input's non-zero (index, value) pairs."""
    model = deps.pick_model(request, body.model, "sparse")
    texts = checked_inputs(request, body.inputs)
    check_direction(body.truncation_direction)
    if body.prompt_name not in (None, "query", "document"):
        raise InvalidInput("prompt_name is query or document here", param="prompt_name")
    truncate = truncation(deps.settings(request), body.truncate)
    side: InputType = "query" if body.prompt_name == "query" else "document"
    work = embed_sparse(model, texts, input_type=side, truncate=truncate)
    result = await deps.until_disconnect(request, work)
    return [
        [
            {"index": int(i), "value": float(v)}
            for i, v in zip(vector.indices, vector.values, strict=True)
        ]
        for vector in result.vectors
    ]


async def embed_tokens(request: Request, body: TeiSparseRequest) -> list[Floats]:
    """POST /embed_all: one vector per token. Served by late-interaction (ColBERT) models: the
    dense ones pool inside their graphs here, so their token states are not there to return."""
    model = deps.pick_model(request, body.model, "late", "dense")
    if model.spec.kind != "late":
        raise InvalidInput(
            f"model {model.name!r} pools inside its graph, so it has no token vectors to return; "
            "/embed_all serves late-interaction (ColBERT) models",
            param="model",
        )
    texts = checked_inputs(request, body.inputs)
    check_direction(body.truncation_direction)
    truncate = truncation(deps.settings(request), body.truncate)
    query = body.prompt_name == "query"
    work = embed_late(model, texts if query else [], [] if query else texts, truncate=truncate)
    return (await deps.until_disconnect(request, work)).matrices


async def rank(request: Request, body: AnyRerankRequest) -> list[dict[str, Any]]:
    """POST /rerank with texts: every text's index and score, best first."""
    answer_as_tei(request)
    model = deps.pick_model(request, body.model, "rerank", "late")
    settings = deps.settings(request)
    texts = check_documents(body.query, body.texts or [], settings)
    truncate = truncation(settings, body.truncate)
    scored = await deps.until_disconnect(request, score(model, body, texts, truncate))
    rows = []
    for index in ranked(scored.scores, None):
        row: dict[str, Any] = {"index": index, "score": scored.scores[index]}
        if body.return_text:
            row["text"] = texts[index]
        rows.append(row)
    return rows


@functools.lru_cache(maxsize=32)
def untruncated(encoder: TextEncoder) -> Tokenizer:
    """A copy of the model's tokenizer that never truncates (the shared one cuts at the
    model's limit and must not be changed while other threads use it)."""
    copy = Tokenizer.from_str(encoder.tokenizer.to_str())
    copy.no_truncation()
    return copy


def tokens_of(tokenizer: Tokenizer, text: str, add_special_tokens: bool) -> list[dict[str, Any]]:
    """TEI's token list: ids, the text each covers and its byte offsets (special tokens: their
    own text and no offsets)."""
    encoding = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    data = text.encode("utf-8", errors="surrogatepass")
    byte_at = [0]
    for char in text:
        byte_at.append(byte_at[-1] + len(char.encode("utf-8", errors="surrogatepass")))
    rows = []
    for token_id, (start, stop), special, token in zip(
        encoding.ids, encoding.offsets, encoding.special_tokens_mask, encoding.tokens, strict=True
    ):
        if special:
            rows.append(
                {"id": token_id, "text": token, "special": True, "start": None, "stop": None}
            )
            continue
        begin, end = byte_at[start], byte_at[stop]
        piece = data[begin:end].decode("utf-8", errors="replace")
        rows.append({"id": token_id, "text": piece, "special": False, "start": begin, "stop": end})
    return rows


async def tokenize(
    request: Request, model: LoadedModel, texts: list[str], add_special_tokens: bool
) -> list[list[dict[str, Any]]]:
    tokenizer = untruncated(model.encoder)

    def run() -> list[list[dict[str, Any]]]:
        return [tokens_of(tokenizer, text, add_special_tokens) for text in texts]

    return await asyncio.to_thread(run)


def id_batch(ids: list[int] | list[list[int]]) -> list[list[int]]:
    """TEI's ids: one list of ids, or a list of them."""
    batch: list[list[int]] = []
    single: list[int] = []
    for item in ids:
        if isinstance(item, list):
            batch.append(item)
        else:
            single.append(item)
    return batch or [single]


def check_ids(model: LoadedModel, batch: list[list[int]], settings: Settings) -> None:
    limit = settings.max_inputs_per_request
    check_count(len(batch), limit, items="inputs", param="ids", empty="ids must not be empty")
    vocab = model.encoder.vocab_size
    for index, ids in enumerate(batch):
        if any(not 0 <= token < vocab for token in ids):
            raise InvalidInput(
                f"ids {index} holds token ids outside the vocabulary (0..{vocab - 1})", param="ids"
            )


async def decode(
    model: LoadedModel, batch: list[list[int]], skip_special_tokens: bool
) -> list[str]:
    tokenizer = model.encoder.tokenizer
    return await asyncio.to_thread(
        lambda: list(tokenizer.decode_batch(batch, skip_special_tokens=skip_special_tokens))
    )


def model_type(model: LoadedModel) -> dict[str, dict[str, object]]:
    if model.spec.kind == "rerank":
        return {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    pooling = "splade" if model.spec.kind == "sparse" else model.spec.pooling
    return {"embedding": {"pooling": pooling}}


def info(model: LoadedModel, settings: Settings, version: str) -> dict[str, Any]:
    """GET /info: TEI's description of the served model and of the router's limits."""
    return {
        "model_id": model.name,
        "model_sha": None,
        "model_dtype": DTYPES.get(model.variant, "float32"),
        "served_model_name": model.name,
        "model_type": model_type(model),
        "max_concurrent_requests": settings.max_concurrent_requests,
        "max_input_length": model.spec.max_length,
        "max_batch_tokens": settings.max_batch_tokens,
        "max_batch_requests": settings.max_batch_items,
        "max_client_batch_size": settings.max_inputs_per_request,
        "auto_truncate": settings.truncate,
        "tokenization_workers": 1,  # each model tokenizes on its batcher's prepare thread
        "version": version,
        "sha": None,
        "docker_label": None,
    }

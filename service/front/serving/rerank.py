"""Reranking logic: cross-encoder pairs through the batcher (or MaxSim for a late model),
scores, order and top_n."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request

from service.errors import InvalidInput
from service.front.schemas.rerank import RerankDocument, RerankOptions, RerankRequest
from service.front.serving.late import maxsim_scores, resolve_late
from service.front.shared import deps
from service.front.shared.batched import submit_counted
from service.front.shared.inputs import check_chars, check_count, truncation
from service.models.kinds.rerank import prepare_pairs, sigmoid
from service.models.loaded import LoadedModel
from service.settings import Settings


@dataclass(frozen=True)
class Scored:
    scores: list[float]  # one per document, in request order
    tokens: int


def check_documents(query: object, documents: Sequence[object], settings: Settings) -> list[str]:
    """Validate a query and its documents; return the documents given as text."""
    if isinstance(query, str) and not query.strip():
        raise InvalidInput("query must not be empty", param="query")
    limit = settings.max_inputs_per_request
    empty = "documents must not be empty"
    check_count(len(documents), limit, items="documents", param="documents", empty=empty)
    texts = [doc.text if isinstance(doc, RerankDocument) else doc for doc in documents]
    if isinstance(query, str):
        check_chars(query, "query", settings, param="query")
    for index, text in enumerate(texts):
        if isinstance(text, str):
            check_chars(text, f"document {index}", settings, param="documents")
    return [text for text in texts if isinstance(text, str)]


async def cross_encode(
    model: LoadedModel, query: str, documents: Sequence[str], *, truncate: bool
) -> Scored:
    """One batcher item per (query, document) pair; raw logits in request order."""
    scores, tokens = await submit_counted(
        model, lambda: prepare_pairs(model, query, documents, truncate)
    )
    return Scored([float(s) for s in scores], tokens)


async def score(
    model: LoadedModel, body: RerankOptions, texts: list[str], truncate: bool
) -> Scored:
    """Relevance of each document: a cross-encoder's logit (sigmoid unless raw_scores), or a
    late model's MaxSim score."""
    if model.spec.kind in ("late", "m3"):  # BGE-M3: MaxSim of its ColBERT vectors
        query, docs, tokens = await resolve_late(model, body.query, texts, truncate=truncate)
        return Scored(maxsim_scores(query, docs), tokens)
    scored = await cross_encode(model, body.query, texts, truncate=truncate)
    if body.raw_scores:
        return scored
    return Scored(sigmoid(np.asarray(scored.scores, dtype=np.float64)).tolist(), scored.tokens)


def check_top_n(top_n: int | None) -> None:
    if top_n is not None and top_n < 1:
        raise InvalidInput(f"top_n must be at least 1, got {top_n}", param="top_n")


def ranked(scores: Sequence[float], top_n: int | None) -> list[int]:
    """Document indices best first (ties keep request order), cut to top_n (more: all)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order if top_n is None else order[:top_n]


def results(
    scored: Scored, texts: Sequence[str], top_n: int | None, return_documents: bool
) -> list[dict[str, Any]]:
    rows = []
    for index in ranked(scored.scores, top_n):
        row: dict[str, Any] = {"index": index, "relevance_score": scored.scores[index]}
        if return_documents:
            row["document"] = {"text": texts[index]}
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Ranked:
    model: LoadedModel
    scored: Scored
    rows: list[dict[str, Any]]


async def rank_documents(request: Request, body: RerankRequest) -> Ranked:
    """A rerank request from model choice to ranked rows: what /rerank, /v1/rerank and
    Cohere's /v2/rerank share (they differ in the answer's envelope)."""
    model = deps.pick_model(request, body.model, "rerank", "late", "m3")
    settings = deps.settings(request)
    texts = check_documents(body.query, body.documents, settings)
    check_top_n(body.top_n)
    truncate = truncation(settings, body.truncate)
    scored = await deps.until_disconnect(request, score(model, body, texts, truncate))
    return Ranked(model, scored, results(scored, texts, body.top_n, body.return_documents))

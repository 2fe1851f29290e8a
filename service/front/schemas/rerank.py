"""Schemas of POST /rerank and /v1/rerank, in the shape Cohere's and Jina's clients send."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from service.front.schemas.embeddings import Usage


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str


class RerankOptions(BaseModel):
    # Cohere and Jina clients send fields this service has no use for (max_chunks_per_doc,
    # rank_fields, ...): they are ignored rather than refused.
    model_config = ConfigDict(extra="ignore")

    query: str = Field(description="The query the documents are ranked for.")
    model: str | None = Field(
        None, description="A served rerank or late model; default: the first rerank model."
    )
    top_n: int | None = Field(None, description="Return the best N (default, or over: all).")
    return_documents: bool = Field(False, description="Echo each document as {'text': ...}.")
    raw_scores: bool = Field(
        False, description="Cross-encoders: the raw logit instead of its sigmoid."
    )
    truncate: bool | None = Field(
        None, description="Cut documents over the model's limit (default: EMBED_TRUNCATE)."
    )


class RerankRequest(RerankOptions):
    documents: list[str | RerankDocument] = Field(
        description="Texts, or objects with a `text` field."
    )


class AnyRerankRequest(RerankOptions):
    """POST /rerank: Cohere's and Jina's shape (documents), or TEI's (texts, return_text)."""

    documents: list[str | RerankDocument] | None = Field(
        None, description="Texts, or objects with a `text` field (Cohere, Jina)."
    )
    texts: list[str] | None = Field(None, description="TEI: the texts to rank.")
    return_text: bool = Field(False, description="TEI: echo each text.")


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float
    document: RerankDocument | None = Field(None, description="Only with return_documents.")


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult] = Field(description="Best first.")
    usage: Usage

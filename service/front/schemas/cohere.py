"""Schemas of Cohere's embed (v1 and v2) and v2 rerank, in the shapes Cohere's SDK sends and
parses (cohere-python's EmbedByTypeResponse, EmbeddingsFloatsEmbedResponse, V2RerankResponse).

Fields the service has no use for (priority, max_tokens, max_tokens_per_doc, ...) are
accepted and ignored: inputs are cut at the model's own token limit."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CohereInputType = Literal["search_query", "search_document", "classification", "clustering"]
CohereEmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
# Cohere's input types -> the model's prompt names (service/front/shared/prompts.py)
PROMPT_NAMES: dict[str, str] = {
    "search_query": "query",
    "search_document": "document",
    "classification": "classification",
    "clustering": "clustering",
}


class CohereEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    texts: list[str] | None = Field(None, description="The texts to embed.")
    images: list[str] | None = Field(None, description="Not served here: POST /embed/image.")
    inputs: list[Any] | None = Field(None, description="Not served here: send texts.")
    model: str | None = Field(None, description="A served dense model; default: the first one.")
    input_type: CohereInputType | None = Field(
        None,
        description="search_query and search_document apply the model's query and document "
        "prefixes; classification and clustering the model's prompts of those names, if any.",
    )
    embedding_types: list[CohereEmbeddingType] | None = Field(
        None, description="Any of float, int8, uint8, binary, ubinary, base64 (default float)."
    )
    output_dimension: int | None = Field(
        None, description="Keep the first N components, renormalised."
    )
    truncate: Literal["NONE", "START", "END"] | None = Field(
        None, description="END cuts inputs at the model's limit, NONE refuses them (413)."
    )


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    input_tokens: int | None = None
    search_units: int | None = None


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class CohereEmbedResponse(BaseModel):
    id: str
    response_type: Literal["embeddings_by_type", "embeddings_floats"]
    embeddings: dict[str, list[list[float]] | list[list[int]] | list[str]] | list[list[float]]
    texts: list[str]
    meta: Meta


class CohereRerankResult(BaseModel):
    index: int
    relevance_score: float


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereRerankResult] = Field(description="Best first.")
    meta: Meta

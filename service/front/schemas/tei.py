"""Schemas of text-embeddings-inference's routes (its router/src/http/types.rs): what its
clients send (huggingface_hub's InferenceClient, LangChain's HuggingFaceEndpointEmbeddings,
LlamaIndex's TextEmbeddingsInference, Haystack's TEI embedders) and the bare JSON arrays they
parse. ``model`` is this service's addition (TEI serves one model); fields TEI has and this
service does not use are accepted and ignored, as TEI's own parser does."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["right", "left", "Right", "Left"]
MODEL = Field(None, description="A served model (this service's addition); default: the first.")
PROMPT = Field(
    None, description="A prompt of the model: query, document, or one its catalogue row names."
)
TRUNCATE = Field(None, description="Cut inputs at the model's limit (default: EMBED_TRUNCATE).")


class TeiEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    truncate: bool | None = TRUNCATE
    truncation_direction: Direction = Field(
        "right", description="Only right: inputs are cut at their end."
    )
    prompt_name: str | None = PROMPT
    normalize: bool = Field(True, description="L2-normalise (TEI's default: true).")
    dimensions: int | None = Field(None, description="Keep the first N components, renormalised.")
    model: str | None = MODEL


class TeiSparseRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    truncate: bool | None = TRUNCATE
    truncation_direction: Direction = Field(
        "right", description="Only right: inputs are cut at their end."
    )
    prompt_name: str | None = Field(
        None, description="query: BM25 and BM42 query weights; otherwise documents."
    )
    model: str | None = MODEL


class TeiSparseValue(BaseModel):
    index: int
    value: float


class TeiRank(BaseModel):
    index: int
    text: str | None = Field(None, description="Only with return_text.")
    score: float


class TeiTokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    add_special_tokens: bool = True
    prompt_name: str | None = PROMPT
    model: str | None = MODEL


class TeiToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = Field(description="Byte offset in the text (null for special tokens).")
    stop: int | None


class TeiDecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ids: list[int] | list[list[int]] = Field(description="Token ids, or a list of them.")
    skip_special_tokens: bool = True
    model: str | None = MODEL


class TeiInfo(BaseModel):
    model_id: str
    model_sha: str | None
    model_dtype: str
    served_model_name: str
    model_type: dict[str, dict[str, object]]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None
    docker_label: str | None

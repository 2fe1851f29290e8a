"""Request and response schemas of the embedding routes (OpenAI's and the native ones)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from service.front.schemas.chunking import Chunking, DenseDocument
from service.models.catalogue import TokenLimit

TokenIds = list[int]
EncodingFormat = Literal["float", "base64"]
InputType = Literal["query", "document"]
# Fields the text routes share (dense and sparse).
Truncate = Annotated[
    bool | None,
    Field(description="Truncate inputs over the model's limit (default: EMBED_TRUNCATE)."),
]
TokenLimitChoice = Annotated[
    TokenLimit | None,
    Field(
        description="Cut inputs at the model's own limit (model) or at the one FastEmbed "
        "applies to this model (fastembed), to match vectors stored by FastEmbed; default: the "
        "model's (EMBED_FASTEMBED_LIMITS changes it per model). GET /models shows both."
    ),
]
# The number types /embed/dense can answer in (serving/quantize.py); float is the default.
EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary"]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


# --- OpenAI ------------------------------------------------------------------------------
def _openai_input(value: object) -> object:
    """One clear message instead of pydantic's four union branches."""

    def is_ids(item: object) -> bool:
        return isinstance(item, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        )

    if isinstance(value, str) or is_ids(value):
        return value
    if isinstance(value, list) and (
        all(isinstance(item, str) for item in value) or all(is_ids(item) for item in value)
    ):
        return value
    raise ValueError(
        "must be a string, a list of strings, a list of token ids or a list of lists of token ids"
    )


OpenAIInput = Annotated[str | list[str] | TokenIds | list[TokenIds], BeforeValidator(_openai_input)]


class EmbeddingRequest(BaseModel):
    """OpenAI's `POST /v1/embeddings` body. Token-id inputs are ids of the served model's own
    vocabulary, without special tokens (the model's are added)."""

    model_config = ConfigDict(extra="ignore")

    input: OpenAIInput
    model: str
    encoding_format: EncodingFormat = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


# --- native /embed/dense -----------------------------------------------------------------
class DenseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    model: str | None = Field(None, description="A served model; default: the first dense one.")
    input_type: InputType | None = Field(
        None, description="Applies the model's query or document prefix from the catalogue."
    )
    truncate: Truncate = None
    token_limit: TokenLimitChoice = None
    normalize: bool | None = Field(None, description="L2-normalise (default: the model's own).")
    dimensions: int | None = Field(None, description="Keep the first N components, renormalised.")
    encoding_format: EncodingFormat = "float"
    chunking: Chunking | None = Field(
        None, description="Long inputs: vectors of chunks (then the answer has `documents`)."
    )
    embedding_type: EmbeddingType = Field(
        "float",
        description="float, int8 / uint8 (scaled by the model's calibrated ranges), or binary / "
        "ubinary (sign bits packed eight to a byte); base64 holds each row's bytes.",
    )


class DenseResponse(BaseModel):
    model: str
    dim: int = Field(description="Dimensions of the float vectors (8 per byte when packed).")
    embeddings: list[list[float]] | list[list[int]] | list[str]
    usage: Usage


class ChunkedDenseResponse(BaseModel):
    """The answer of /embed/dense with `chunking`."""

    model: str
    dim: int
    documents: list[DenseDocument]
    usage: Usage

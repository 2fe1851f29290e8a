"""Request and response schemas of POST /embed/sparse and POST /embed/hybrid."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from service.front.schemas.chunking import Chunking, ChunkPlace
from service.front.schemas.embeddings import InputType, TokenLimitChoice, Truncate, Usage
from service.front.schemas.multivector import Compression


class SparseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    model: str | None = Field(None, description="A served sparse model; default: the first one.")
    input_type: InputType = Field(
        "document",
        description="BM25 and BM42 weigh queries 1 per distinct token and documents by term "
        "frequency (BM25) or attention (BM42); SPLADE embeds both alike.",
    )
    truncate: Truncate = None
    token_limit: TokenLimitChoice = None
    language: str | None = Field(
        None, description="BM25 only: stemmer and stopword language (default: the model's)."
    )
    return_tokens: bool = Field(
        False, description="Also return the token behind each index (vocabulary token or stem)."
    )
    chunking: Chunking | None = Field(
        None, description="Long inputs (SPLADE, BM42): vectors of chunks, in `documents`."
    )


class SparseEmbedding(BaseModel):
    indices: list[int]
    values: list[float]
    tokens: list[str] | None = None


class SparseResponse(BaseModel):
    model: str
    embeddings: list[SparseEmbedding]
    usage: Usage


class SparseChunk(ChunkPlace):
    embedding: SparseEmbedding


class SparseDocument(BaseModel):
    index: int
    chunks: list[SparseChunk]
    embedding: SparseEmbedding | None = Field(None, description="Only with chunking.pool.")


class ChunkedSparseResponse(BaseModel):
    model: str
    documents: list[SparseDocument]
    usage: Usage


class HybridMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A served dense, sparse, late or BGE-M3 model.")
    name: str | None = Field(
        None,
        description="Vector name in the answer (default: the model's kind if no other "
        "member has that kind, else the last part of the model's name). A BGE-M3 member "
        "gives three vectors, dense, sparse and late, with this name and '-' before them.",
    )


class HybridRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    models: list[str | HybridMember] = Field(min_length=1, description="Models of any kinds.")
    input_type: InputType = "document"
    truncate: bool | None = None
    language: str | None = Field(None, description="For BM25 members.")
    return_tokens: bool = False
    compress: Compression | None = Field(
        None, description="The late members' multi-vectors pooled, MUVERA or binarised."
    )


class HybridResponse(BaseModel):
    models: dict[str, str] = Field(description="Vector name -> model name.")
    vectors: list[dict[str, list[float] | SparseEmbedding | list[list[float]] | list[list[int]]]]
    usage: Usage

"""Schemas of POST /embed/late (ColBERT multi-vectors) and POST /score/maxsim."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from service.front.schemas.embeddings import EncodingFormat, InputType, Usage
from service.front.schemas.multivector import CompressedForm, Compression


class LateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One text or a list of texts.")
    model: str | None = Field(None, description="A served late model; default: the first one.")
    input_type: InputType = Field(
        "document",
        description="query: marker [Q], padded with [MASK] to the query length (longer queries "
        "are cut to it); document: marker [D], punctuation dropped from the output.",
    )
    truncate: bool | None = Field(
        None, description="Cut documents over the model's limit (default: EMBED_TRUNCATE)."
    )
    encoding_format: EncodingFormat = Field(
        "float", description="float: lists of floats; base64: little-endian float32 matrix."
    )
    return_tokens: bool = Field(
        False, description="Also return the vocabulary token behind each vector row."
    )
    compress: Compression | None = Field(
        None, description="Pooled, MUVERA or binarised multi-vectors (default: raw)."
    )


class MultiVector(BaseModel):
    """Token vectors: a list of rows, or base64 of a little-endian float32 matrix with its
    shape. The items of /embed/late's `embeddings` can be sent back as they are."""

    model_config = ConfigDict(extra="ignore")

    embedding: list[list[float]] | str
    shape: list[int] | None = Field(None, description="[tokens, dim]; required with base64.")


class LateEmbedding(BaseModel):
    index: int
    tokens: int = Field(description="How many token vectors the input gave.")
    shape: list[int] = Field(description="The shape of `embedding`.")
    embedding: list[list[float]] | list[float] | list[list[int]] | str
    type: CompressedForm | None = Field(
        None,
        description="Only with compress: float (rows), muvera (one vector) or ubinary (rows of "
        "sign bytes).",
    )
    token_strings: list[str] | None = Field(None, description="Only with return_tokens.")


class LateResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[LateEmbedding]
    usage: Usage


class MaxSimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | MultiVector
    documents: list[str | MultiVector]
    model: str | None = Field(
        None, description="Late model embedding the texts; not needed when all are vectors."
    )
    truncate: bool | None = None


class MaxSimResponse(BaseModel):
    model: str | None
    scores: list[float] = Field(description="MaxSim score of each document, in request order.")
    usage: Usage

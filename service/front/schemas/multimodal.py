"""Schemas of POST /embed/multimodal (ColPali): page images and text queries."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.front.schemas.multivector import CompressedForm, Compression


class MultimodalRequest(BaseModel):
    """JSON body. A multipart form takes page images as file parts and `queries` and `model`
    as form fields (`queries` repeated)."""

    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(default_factory=list, description="Text queries.")
    images: list[str] = Field(
        default_factory=list, description="Page images as base64 strings or data URIs."
    )
    model: str | None = Field(None, description="A served multimodal model; default: the first.")
    scores: bool = Field(
        True,
        description="With queries and images both given, MaxSim scores of each query "
        "against each image.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of floats; base64: little-endian float32 matrix."
    )
    compress: Compression | None = Field(
        None,
        description="Pooled, MUVERA (images as documents, texts as queries) or binarised "
        "multi-vectors (default: raw); scores are MaxSim over the raw ones. In a form: JSON text.",
    )


class MultiVectorItem(BaseModel):
    """The item shape of /embed/late: token vectors of one input, with their count."""

    index: int
    tokens: int
    shape: list[int]
    embedding: list[list[float]] | list[float] | list[list[int]] | str
    type: CompressedForm | None = Field(None, description="Only with compress.")


class MultimodalUsage(BaseModel):
    images: int
    query_tokens: int


class MultimodalResponse(BaseModel):
    model: str
    dim: int
    queries: list[MultiVectorItem] = Field(description="Per query: one vector per token.")
    images: list[MultiVectorItem] = Field(description="Per image: one vector per token.")
    scores: list[list[float]] | None = Field(
        None, description="scores[q][i]: MaxSim of query q against image i."
    )
    usage: MultimodalUsage
    object: Literal["multimodal_embeddings"] = "multimodal_embeddings"

"""The `chunking` option of POST /embed/dense and /embed/sparse, and the items of their
chunked answers (docs/long-documents.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Pool = Literal["mean", "max"]


class Chunking(BaseModel):
    """Split each input into chunks that the model holds; one vector per chunk."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Most tokens one chunk feeds the model, its special tokens and input_type "
        "prefix included (default: the model's max tokens). With late: most tokens of the "
        "input in one chunk (required).",
    )
    overlap_tokens: int = Field(
        0,
        ge=0,
        description="Tokens a chunk may share with the one before it; fewer where that "
        "lets it start at a sentence or word.",
    )
    pool: Pool | None = Field(
        None,
        description="Also one vector per input from its chunks' vectors: their mean weighted "
        "by each chunk's tokens, or their component-wise max; renormalised when they are.",
    )
    late: bool = Field(
        False,
        description="Late chunking (dense models whose catalogue row allows it): embed each "
        "input once in windows as long as the model's context, and pool each chunk's token "
        "states within its window.",
    )


class ChunkPlace(BaseModel):
    start: int = Field(description="Character offset of the chunk in its input.")
    end: int = Field(description="One past its last character: the chunk is input[start:end].")
    tokens: int = Field(
        description="Tokens it fed the model, special tokens and prefix included (late "
        "chunking: tokens of the input that it pools)."
    )


class DenseChunk(ChunkPlace):
    embedding: list[float] | str


class DenseDocument(BaseModel):
    index: int = Field(description="Position of the input in the request.")
    chunks: list[DenseChunk] = Field(description="In text order; they cover the whole input.")
    embedding: list[float] | str | None = Field(None, description="Only with chunking.pool.")

"""The `compress` field of /embed/late, /embed/multimodal and /embed/hybrid: how to shrink
multi-vectors (docs/late-interaction-and-rerank.md#compressed-multi-vectors)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CompressedForm = Literal["float", "muvera", "ubinary"]


class MuveraOptions(BaseModel):
    """FastEmbed's MUVERA parameters (fastembed.postprocess.muvera.Muvera), same defaults."""

    model_config = ConfigDict(extra="forbid")

    k_sim: int = Field(5, ge=1, le=10, description="SimHash planes: 2**k_sim buckets.")
    dim_proj: int = Field(
        16, ge=1, description="Values per bucket after a random +-1 projection (<= dim)."
    )
    r_reps: int = Field(20, ge=1, le=100, description="Independent repetitions.")
    seed: int = Field(42, ge=0, description="Seed of the random planes and projections.")


class Compression(BaseModel):
    """Raw multi-vectors unless asked: fewer rows (pool_factor), one fixed-size vector
    (muvera), or sign bits (binary). Pooling applies first; muvera and binary exclude each
    other."""

    model_config = ConfigDict(extra="forbid")

    pool_factor: int = Field(
        1,
        ge=1,
        le=64,
        description="Hierarchical token pooling: at most rows // pool_factor rows, each the "
        "mean of a cluster of similar rows (1: no pooling).",
    )
    muvera: MuveraOptions | None = Field(
        None,
        description="One fixed-size vector per input (r_reps * 2**k_sim * dim_proj values); "
        "queries and documents are encoded differently, per input_type.",
    )
    binary: bool = Field(
        False, description="Each row's sign bits packed eight to a byte (ubinary), as ints."
    )

"""Planners for the sparse families that need more than ``plan_splade``.

BM42 reads the last layer's attention of a BERT encoder (all-MiniLM-L6-v2). The graph
outputs that attention as ``attention_6`` (batch, heads, seq, seq), the name FastEmbed's
BM42 asks its session for, so a converted directory serves here and loads in FastEmbed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from service.convert.plan import ExportPlan, ExportRequest, plan_transformer

BM42_OUTPUT = "attention_6"


def tokenizer_max_length(request: ExportRequest) -> int:
    """The tokenizer's own limit (what FastEmbed truncates BM42 inputs at), else 512."""
    if request.max_length:
        return request.max_length
    path = request.source / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    limits = [v for k in ("model_max_length", "max_length") if isinstance(v := config.get(k), int)]
    return min([*limits, 512]) if limits else 512


def plan_bm42(request: ExportRequest) -> ExportPlan:

    spec = {
        "kind": "sparse",
        "max_length": tokenizer_max_length(request),
        "options": {"family": "bm42", "attention_output": BM42_OUTPUT},
    }
    plan = plan_transformer(
        replace(request, attentions=True),
        "AutoModel",
        lambda out, kw: out.attentions[-1],
        [BM42_OUTPUT],
        {},
        token_outputs=True,
    )
    plan.axes[BM42_OUTPUT] = {0: "batch", 2: "sequence", 3: "sequence_k"}
    plan.spec = {**plan.spec, **spec}
    return plan

"""Dense export with pooling inside the graph: the converter's default for dense models.

The graph's one output is ``sentence_embedding`` (batch, dim): the pooled, not yet
normalised, vector. On a GPU only (batch, dim) is then copied back to the host instead of
(batch, sequence, dim), and no pooling runs in Python. Normalisation stays in the serving
layer, where it costs microseconds for (batch, dim) and where a request's ``normalize: false``
can still ask for the raw pooled vector (a graph that normalised could not give it back).

Pooling that fits a graph: ``mean`` (masked mean), ``cls`` (first token) and ``last`` (last
unmasked token of a right-padded row, as the service pads). Token outputs are still written
with ``--token-outputs``, with ``--attentions`` (BM42) and with the older ``--pool-in-graph``
(mean pooling and L2 normalisation both in the graph), which keep the plain dense planner.
"""

from __future__ import annotations

from typing import Any

from service.convert.plan import (
    ExportPlan,
    ExportRequest,
    plan_dense,
    plan_transformer,
    sentence_transformers_config,
)

GRAPH_POOLINGS = ("mean", "cls", "last")
OUTPUT = "sentence_embedding"


def pool_tokens(hidden: Any, mask: Any, how: str) -> Any:
    """(batch, seq, dim) token states -> (batch, dim), for a right-padded mask (torch)."""
    import torch

    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0]), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9)


def dense_spec(request: ExportRequest) -> dict[str, Any]:
    """dim, pooling and normalize as the plain dense planner records them."""
    import transformers

    found = sentence_transformers_config(request.source)
    config = transformers.AutoConfig.from_pretrained(str(request.source))
    normalize = found.get("normalize", True) if request.normalize is None else request.normalize
    pooling = request.pooling or found.get("pooling", "mean")
    return {"dim": int(config.hidden_size), "pooling": pooling, "normalize": normalize}


def plan_dense_pooled(request: ExportRequest) -> ExportPlan:
    """Dense models: pooling in the graph where it fits, token outputs otherwise."""

    if request.attentions or request.pool_in_graph or request.token_outputs:
        return plan_dense(request)
    spec = dense_spec(request)
    pooling = str(spec["pooling"])
    if pooling not in GRAPH_POOLINGS:
        return plan_dense(request)
    return plan_transformer(
        request,
        "AutoModel",
        lambda out, kw: pool_tokens(out.last_hidden_state, kw["attention_mask"], pooling),
        [OUTPUT],
        spec,
        token_outputs=False,
    )

"""Export planner for BGE-M3 (``--kind m3``; chosen by itself for FlagEmbedding's layout).

FlagEmbedding's checkpoint (BAAI/bge-m3): an XLM-RoBERTa directory (config.json, weights,
tokenizer) beside ``colbert_linear.pt`` (hidden -> hidden, with bias) and ``sparse_linear.pt``
(hidden -> 1, with bias), both torch state dicts. One graph takes input_ids and
attention_mask and outputs, from one pass of the encoder:

- ``dense_vecs`` (batch, hidden): the [CLS] state, unnormalised;
- ``sparse_vecs`` (batch, sequence): relu(sparse_linear(state)) per token;
- ``colbert_vecs`` (batch, sequence - 1, hidden): colbert_linear of every state after [CLS].

The service normalises and shapes them (service/models/kinds/m3.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.convert.plan import ExportPlan, ExportRequest, keyword_module, text_example

HEADS = ("colbert_linear.pt", "sparse_linear.pt")
OUTPUTS = ["dense_vecs", "sparse_vecs", "colbert_vecs"]
UNUSED_TOKENS = ("cls_token", "eos_token", "pad_token", "unk_token")  # no lexical weight


def is_m3_layout(source: Path) -> bool:
    return all((source / name).is_file() for name in HEADS)


def head(source: Path, name: str, hidden: int, out: int | None) -> Any:
    """A torch Linear loaded from one of the heads' state dicts, its shape checked."""
    import torch

    state = torch.load(str(source / name), map_location="cpu", weights_only=True)
    weight = state.get("weight")
    if weight is None or weight.ndim != 2 or weight.shape[1] != hidden:
        shape = None if weight is None else tuple(weight.shape)
        raise SystemExit(f"convert: {name} has weight {shape}, not (dim, {hidden})")
    if out is not None and weight.shape[0] != out:
        raise SystemExit(f"convert: {name} has {weight.shape[0]} outputs, not {out}")
    linear = torch.nn.Linear(hidden, int(weight.shape[0]), bias="bias" in state)
    linear.load_state_dict(state)
    return linear.float().eval()


def unused_token_ids(source: Path) -> list[int]:
    """The ids FlagEmbedding gives no lexical weight: cls, eos, pad and unk."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    tokens = [str(t) for name in UNUSED_TOKENS if (t := getattr(tokenizer, name, None))]
    # One token gives one id; transformers types the result as int | list[int].
    return sorted({int(tokenizer.convert_tokens_to_ids(token)) for token in tokens})  # type: ignore[arg-type]


def max_length(request: ExportRequest, config: Any) -> int:
    """XLM-R positions start after the padding index: 8194 positions hold 8192 tokens."""
    if request.max_length:
        return request.max_length
    offset = int(getattr(config, "pad_token_id", -1) or 0) + 1
    return min(int(config.max_position_embeddings) - offset, 8192)


def plan_m3(request: ExportRequest) -> ExportPlan:
    import torch
    import transformers

    if not is_m3_layout(request.source):
        raise SystemExit(f"convert: BGE-M3 needs {' and '.join(HEADS)} in {request.source}")
    encoder = transformers.AutoModel.from_pretrained(
        str(request.source), attn_implementation="eager", add_pooling_layer=False
    ).eval()
    hidden = int(encoder.config.hidden_size)
    parts = torch.nn.ModuleDict(
        {
            "encoder": encoder,
            "colbert": head(request.source, HEADS[0], hidden, hidden),
            "sparse": head(request.source, HEADS[1], hidden, 1),
        }
    )
    inputs, mask = text_example(int(encoder.config.vocab_size), with_types=False)

    def call(model: Any, **kwargs: Any) -> Any:
        states = model["encoder"](**kwargs).last_hidden_state
        weights = torch.relu(model["sparse"](states)).squeeze(-1)
        return states[:, 0], weights, model["colbert"](states[:, 1:])

    module = keyword_module(parts, call, list(inputs))
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes |= {"dense_vecs": {0: "batch"}, "sparse_vecs": {0: "batch", 1: "sequence"}}
    axes["colbert_vecs"] = {0: "batch", 1: "tokens"}
    spec = {
        "dim": hidden,
        "pooling": "cls",
        "normalize": True,
        "max_length": max_length(request, encoder.config),
        "options": {"unused_token_ids": unused_token_ids(request.source)},
    }
    return ExportPlan(module, inputs, OUTPUTS, axes, spec, compare_mask=mask)

"""Export planner for ColBERT checkpoints: a transformer encoder followed by a linear
projection of its token states (``--kind late``).

The layout of colbert-ir/colbertv2.0 and answerdotai/answerai-colbert-small-v1 (ColBERT's
``HF_ColBERT``): ``config.json`` of the encoder, one weights file whose encoder keys carry the
``bert.`` prefix and whose projection is ``linear.weight`` (dim x hidden, no bias), and an
optional ``artifact.metadata`` JSON with ColBERT's settings (query_maxlen, marker tokens,
attend_to_mask_tokens). The graph takes input_ids and attention_mask and outputs the projected
token vectors, unnormalised; the service normalises them and applies the token rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.convert.plan import (
    ExportPlan,
    ExportRequest,
    keyword_module,
    max_length_of,
    text_example,
)

PROJECTION_KEYS = ("linear.weight", "colbert_linear.weight")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_weights(source: Path) -> dict[str, Any]:
    """The checkpoint's state dict (safetensors preferred)."""
    for name in WEIGHT_FILES:
        path = source / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        import torch

        return dict(torch.load(str(path), map_location="cpu", weights_only=True))
    raise SystemExit(f"convert: {source} has none of {WEIGHT_FILES}")


def projection_of(weights: dict[str, Any], request: ExportRequest, hidden: int) -> Any:
    """A bias-free torch Linear holding the checkpoint's projection."""
    import torch

    wanted = request.options.pop("projection", None)
    keys = (wanted,) if wanted else PROJECTION_KEYS
    found = [key for key in keys if key in weights]
    if not found:
        raise SystemExit(f"convert: no projection weight {list(keys)} in {request.source}")
    weight = weights[found[0]].float()
    if weight.ndim != 2 or weight.shape[1] != hidden:
        shape = tuple(weight.shape)
        raise SystemExit(f"convert: {found[0]} has shape {shape}, not (dim, {hidden})")
    bias_key = found[0].removesuffix("weight") + "bias"
    linear = torch.nn.Linear(hidden, weight.shape[0], bias=bias_key in weights)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias_key in weights:
            linear.bias.copy_(weights[bias_key].float())
    return linear.eval()


def colbert_options(source: Path) -> dict[str, Any]:
    """Token rules from artifact.metadata and the tokenizer, as catalogue options."""
    metadata_file = source / "artifact.metadata"
    meta = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
    options: dict[str, Any] = {
        "query_length": int(meta.get("query_maxlen", 32)),
        "attend_to_mask_tokens": bool(meta.get("attend_to_mask_tokens", False)),
    }
    tokenizer_file = source / "tokenizer.json"
    if tokenizer_file.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        markers = (
            ("query_marker_id", meta.get("query_token_id", "[unused0]")),
            ("document_marker_id", meta.get("doc_token_id", "[unused1]")),
        )
        for option, token in markers:
            token_id = tokenizer.token_to_id(str(token))
            if token_id is not None:
                options[option] = int(token_id)
        for mask in ("[MASK]", "<mask>"):
            if tokenizer.token_to_id(mask) is not None:
                options["mask_token"] = mask
                break
    return options


def plan_colbert(request: ExportRequest) -> ExportPlan:
    import torch
    import transformers

    encoder = transformers.AutoModel.from_pretrained(
        str(request.source), attn_implementation="eager"
    ).eval()
    hidden = int(encoder.config.hidden_size)
    linear = projection_of(load_weights(request.source), request, hidden)
    parts = torch.nn.ModuleDict({"encoder": encoder, "linear": linear})
    # Token types are all 0 in ColBERT: the graph takes ids and mask only, as the published
    # ONNX files of colbertv2.0 and answerai-colbert-small do.
    inputs, mask = text_example(int(encoder.config.vocab_size), with_types=False)

    def call(model: Any, **kwargs: Any) -> Any:
        return model["linear"](model["encoder"](**kwargs).last_hidden_state)

    module = keyword_module(parts, call, list(inputs))
    axes = {name: {0: "batch", 1: "sequence"} for name in [*inputs, "token_embeddings"]}
    spec = {
        "dim": int(linear.weight.shape[0]),
        "max_length": max_length_of(request, encoder.config, {}),
        "options": colbert_options(request.source),
    }
    return ExportPlan(module, inputs, ["token_embeddings"], axes, spec, compare_mask=mask)

"""What every exporter shares: the request, the plan a kind's planner returns (a torch module
called with keyword inputs, example inputs, output names, dynamic axes and the catalogue
fields to record), the helpers planners build on, and the plain transformer plans (dense,
SPLADE, cross-encoder). Family planners live in their own modules and import from here;
export.py runs a plan (it imports the planners, never the other way round)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ExportRequest:
    source: Path
    out: Path
    kind: str = "dense"
    name: str | None = None
    max_length: int | None = None
    pooling: str | None = None
    normalize: bool | None = None
    attentions: bool = False
    pool_in_graph: bool = False
    token_outputs: bool = False  # dense: token states out, pooling in the service
    options: dict[str, Any] = field(default_factory=dict)
    optimize: bool = False
    int8: bool = False
    openvino_int8: bool = False  # NNCF int8 as OpenVINO IR (service/convert/openvino_int8.py)
    fp16: bool = False
    check_texts: list[str] = field(default_factory=list)


@dataclass
class ExportPlan:
    """What to export: `module(**inputs)` returns a tensor or a tuple matching `outputs`."""

    module: Any
    inputs: dict[str, Any]  # name -> example torch tensor
    outputs: list[str]
    axes: dict[str, dict[int, str]]
    spec: dict[str, Any]  # catalogue fields (name and kind are added by export)
    compare_mask: Any = None  # (batch, seq) mask: compare token outputs only where it is 1
    needs_tokenizer: bool = True


Planner = Callable[[ExportRequest], ExportPlan]


def sentence_transformers_config(source: Path) -> dict[str, Any]:
    """Pooling, normalisation and max length from a sentence-transformers layout, if any."""
    found: dict[str, Any] = {}
    modules_file = source / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        found["normalize"] = any(m["type"].endswith("Normalize") for m in modules)
        for module in modules:
            if module["type"].endswith("Pooling"):
                pooling = json.loads((source / module["path"] / "config.json").read_text())
                if pooling.get("pooling_mode_cls_token"):
                    found["pooling"] = "cls"
                elif pooling.get("pooling_mode_lasttoken"):
                    found["pooling"] = "last"
                elif pooling.get("pooling_mode_mean_tokens"):
                    found["pooling"] = "mean"
    bert_config = source / "sentence_bert_config.json"
    if bert_config.is_file():
        max_len = json.loads(bert_config.read_text()).get("max_seq_length")
        if isinstance(max_len, int):
            found["max_length"] = max_len
    return found


def keyword_module(model: Any, call: Callable[..., Any], names: list[str]) -> Any:
    """A torch module whose positional inputs `names` are passed on as keywords:
    `call(model, **inputs)`. transformers 5 reordered forward()'s positional arguments, so
    models are always called with keywords. `model` is registered as a submodule so its
    weights export as initializers."""
    import torch

    class Keyword(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            return call(self.model, **dict(zip(names, args, strict=True)))

    return Keyword().eval()


def text_example(vocab_size: int, with_types: bool) -> tuple[dict[str, Any], Any]:
    """Two rows, the first padded, so the export is checked with a real mask."""
    import torch

    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]], dtype=torch.long)
    ids = ids.clamp(max=vocab_size - 1)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return inputs, mask


def takes_token_types(model: Any) -> bool:
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters


def max_length_of(request: ExportRequest, config: Any, found: dict[str, Any]) -> int:
    return int(
        request.max_length
        or found.get("max_length")
        or min(int(getattr(config, "max_position_embeddings", 512)), 8192)
    )


def _mean_pool(hidden: Any, mask: Any, normalize: bool) -> Any:
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1) if normalize else pooled


def plan_transformer(
    request: ExportRequest,
    auto_class: str,
    pick: Callable[[Any, dict[str, Any]], Any],
    outputs: list[str],
    spec: dict[str, Any],
    token_outputs: bool,
) -> ExportPlan:
    """The common case: one transformers model, text inputs, outputs picked from its result."""
    import transformers

    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if request.attentions:
        kwargs["output_attentions"] = True
    model = getattr(transformers, auto_class).from_pretrained(str(request.source), **kwargs).eval()
    with_types = takes_token_types(model)
    inputs, mask = text_example(int(model.config.vocab_size), with_types)
    module = keyword_module(model, lambda m, **kw: pick(m(**kw), kw), list(inputs))
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    for name in outputs:
        axes[name] = {0: "batch", 1: "sequence"} if token_outputs else {0: "batch"}
    found = sentence_transformers_config(request.source)
    full_spec = {"max_length": max_length_of(request, model.config, found), **spec}
    return ExportPlan(module, inputs, outputs, axes, full_spec, compare_mask=mask)


def plan_dense(request: ExportRequest) -> ExportPlan:
    import transformers

    found = sentence_transformers_config(request.source)
    config = transformers.AutoConfig.from_pretrained(str(request.source))
    pooling = request.pooling or found.get("pooling", "mean")
    normalize = found.get("normalize", True) if request.normalize is None else request.normalize
    spec = {"dim": int(config.hidden_size), "pooling": pooling, "normalize": normalize}
    if request.pool_in_graph:
        if pooling != "mean":
            raise SystemExit("convert: --pool-in-graph supports mean pooling only")
        return plan_transformer(
            request,
            "AutoModel",
            lambda out, kw: _mean_pool(out.last_hidden_state, kw["attention_mask"], normalize),
            ["sentence_embedding"],
            spec,
            token_outputs=False,
        )
    if request.attentions:
        plan = plan_transformer(
            request,
            "AutoModel",
            lambda out, kw: (out.last_hidden_state, out.attentions[-1]),
            ["last_hidden_state", "attentions"],
            spec,
            token_outputs=True,
        )
        plan.axes["attentions"] = {0: "batch", 2: "sequence", 3: "sequence_k"}
        return plan
    return plan_transformer(
        request,
        "AutoModel",
        lambda out, kw: out.last_hidden_state,
        ["last_hidden_state"],
        spec,
        token_outputs=True,
    )


def plan_splade(request: ExportRequest) -> ExportPlan:
    return plan_transformer(
        request,
        "AutoModelForMaskedLM",
        lambda out, kw: out.logits,
        ["logits"],
        {},
        token_outputs=True,
    )


def plan_cross_encoder(request: ExportRequest) -> ExportPlan:
    return plan_transformer(
        request,
        "AutoModelForSequenceClassification",
        lambda out, kw: out.logits,
        ["logits"],
        {},
        token_outputs=False,
    )

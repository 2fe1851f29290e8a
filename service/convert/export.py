"""Export a transformers / sentence-transformers checkpoint to an ONNX model directory the
service serves. Needs the optional `convert` extra (torch, transformers, onnx); the service
itself never imports this module.

Each kind has a *planner* (``PLANNERS``) that loads the checkpoint and says what to export:
a torch module called with keyword inputs, example inputs, output names, dynamic axes and
the catalogue fields to record. ``export`` does the rest for every kind the same way:
torch.onnx.export (opset 17), a check against PyTorch on the example, tokenizer files and
``service_model.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.convert import image_export, multimodal_export, pooled_export, sparse_export
from service.convert.colbert import plan_colbert
from service.models.store import METADATA_FILE

OPSET = 17
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "vocab.txt",
    "preprocessor_config.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)


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


# kind -> planner. New kinds register here (their planners may live in their own modules).
PLANNERS: dict[str, Planner] = {
    "dense": pooled_export.plan_dense_pooled,  # pooling in the graph where it fits
    "sparse": plan_splade,
    "rerank": plan_cross_encoder,
    "late": plan_colbert,
    "bm42": sparse_export.plan_bm42,
    "image": image_export.plan_image_tower,
    "clip-text": image_export.plan_text_tower,
    "multimodal": multimodal_export.plan_colpali,
}


def export(request: ExportRequest) -> dict[str, Any]:
    """Write OUT/model.onnx, the tokenizer files and service_model.json; return the metadata."""
    import torch

    if request.kind not in PLANNERS:
        raise SystemExit(
            f"convert: no exporter for kind {request.kind!r} (have {sorted(PLANNERS)})"
        )
    request.out.mkdir(parents=True, exist_ok=True)
    plan = PLANNERS[request.kind](request)
    graph = request.out / "model.onnx"
    names = list(plan.inputs)
    example = tuple(plan.inputs.values())
    with torch.no_grad():
        # Reference first: tracing can leave state behind that changes a later eager call.
        reference = plan.module(*example)
        torch.onnx.export(
            plan.module,
            example,
            str(graph),
            input_names=names,
            output_names=plan.outputs,
            dynamic_axes=plan.axes,
            opset_version=OPSET,
            dynamo=False,
        )
    feeds = {name: tensor.numpy() for name, tensor in plan.inputs.items()}
    mask = None if plan.compare_mask is None else plan.compare_mask.numpy()
    error = max_error(graph, feeds, reference, mask)
    if plan.needs_tokenizer:
        copy_tokenizer_files(request.source, request.out)
    else:
        copy_files(request.source, request.out)
    spec = {"name": request.name or request.source.name, "kind": request.kind, **plan.spec}
    if request.options:
        spec["options"] = {**spec.get("options", {}), **request.options}
    metadata = {
        "spec": spec,
        "model_file": "model.onnx",
        "variants": {"fp32": "model.onnx"},
        "default_cpu": "fp32",
        "default_gpu": "fp32",
        "export": {
            "opset": OPSET,
            "outputs": plan.outputs,
            "max_abs_error_vs_torch": error,
            "source": str(request.source),
        },
    }
    if request.optimize or request.int8 or request.fp16:
        from service.convert.variants import add_variants

        add_variants(
            request.out,
            metadata,
            optimized=request.optimize,
            int8=request.int8,
            fp16=request.fp16,
            check_texts=request.check_texts,
        )
    if request.kind == "dense":  # int8 / uint8 output ranges (service/front/quantize.py)
        from service.convert.calibration import calibrate
        from service.convert.variants import CHECK_TEXTS

        calibrate(request.out, metadata, CHECK_TEXTS + request.check_texts)
    write_metadata(request.out, metadata)
    return metadata


def max_error(graph: Path, feeds: dict[str, Any], reference: Any, mask: Any) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch on the example
    (token outputs compared only at unmasked positions: padded ones hold arbitrary values)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    expected = reference if isinstance(reference, tuple) else (reference,)
    worst = 0.0
    for ours, theirs in zip(got, expected, strict=True):
        theirs = theirs.detach().numpy()
        if mask is not None and ours.ndim >= 3 and ours.shape[:2] == mask.shape:
            ours, theirs = ours[mask == 1], theirs[mask == 1]
        worst = max(worst, float(np.max(np.abs(ours - theirs))))
    return worst


def copy_files(source: Path, out: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)


def copy_tokenizer_files(source: Path, out: Path) -> None:
    copy_files(source, out)
    if not (out / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(source)).backend_tokenizer.save(
            str(out / "tokenizer.json")
        )


def write_metadata(out: Path, metadata: dict[str, Any]) -> None:
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def read_metadata_file(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / METADATA_FILE).read_text())
    return data

"""Export planners for CLIP-style dual encoders (CLIP, SigLIP, ... anything whose transformers
model has ``get_image_features`` / ``get_text_features``): the image tower as an ``image``
model, the text tower as a ``dense`` model whose graph output is already the projected
sentence vector (``options.pooled_output = 0``). Export the same checkpoint twice:

    python -m service convert CKPT out/vision --kind image
    python -m service convert CKPT out/text --kind clip-text
"""

from __future__ import annotations

from typing import Any

from service.convert.plan import ExportPlan, ExportRequest, keyword_module, text_example


def _load(request: ExportRequest) -> Any:
    import transformers

    return transformers.AutoModel.from_pretrained(
        str(request.source), attn_implementation="eager"
    ).eval()


def _features(output: Any) -> Any:
    """transformers 5 returns a model output whose pooler_output is the projected vector;
    transformers 4 returned that tensor itself."""
    return getattr(output, "pooler_output", output)


def _projection_dim(model: Any) -> int:
    config = model.config
    dim = getattr(config, "projection_dim", None) or config.vision_config.hidden_size
    return int(dim)


def plan_image_tower(request: ExportRequest) -> ExportPlan:
    """pixel_values (batch, 3, H, W) -> image_embeds (batch, projection_dim), not normalised."""
    import torch

    model = _load(request)
    size = int(model.config.vision_config.image_size)
    channels = int(getattr(model.config.vision_config, "num_channels", 3))
    pixels = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    module = keyword_module(
        model, lambda m, **kw: _features(m.get_image_features(**kw)), ["pixel_values"]
    )
    spec = {"dim": _projection_dim(model), "normalize": True}
    return ExportPlan(
        module,
        {"pixel_values": pixels},
        ["image_embeds"],
        {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
        spec,
        needs_tokenizer=False,
    )


def plan_text_tower(request: ExportRequest) -> ExportPlan:
    """input_ids, attention_mask -> text_embeds (batch, projection_dim): a dense model."""

    model = _load(request)
    text_config = model.config.text_config
    inputs, _ = text_example(int(text_config.vocab_size), with_types=False)
    eos = getattr(text_config, "eos_token_id", None)
    if isinstance(eos, int) and eos != 2:  # the tower pools at the first end-of-text token
        inputs["input_ids"][:, -1] = eos
        inputs["input_ids"][0, -2] = eos
    module = keyword_module(
        model, lambda m, **kw: _features(m.get_text_features(**kw)), list(inputs)
    )
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes["text_embeds"] = {0: "batch"}
    spec = {
        "kind": "dense",
        "dim": _projection_dim(model),
        "pooling": "none",
        "normalize": True,
        "max_length": request.max_length or int(text_config.max_position_embeddings),
        "options": {"pooled_output": 0},
    }
    return ExportPlan(module, inputs, ["text_embeds"], axes, spec)

"""Export planner for ColPali (transformers' ColPaliForRetrieval) as one graph:
input_ids, attention_mask, pixel_values -> embeddings (batch, sequence, dim), L2-normalised
per token and zeroed at padding, as PyTorch gives them.

Measured on a tiny random ColPali (transformers 5.24, torch 2.13, opset 17): with the default
SDPA attention the traced graph differs from PyTorch (max abs 0.09-0.16, min cosine 0.989);
with ``attn_implementation="eager"`` it matches within 1e-6, pages and queries alike, as long
as pages come before queries in a batch (the graph splices image features into image-token
positions in batch order; the service's collate orders them so).
"""

from __future__ import annotations

from typing import Any

from service.convert.plan import ExportPlan, ExportRequest, keyword_module

IMAGE_PROMPT = "Describe the image.\n"
QUERY_PREFIX = "Query: "
QUERY_SUFFIX = "<pad>" * 10 + "\n"


def _example_pages(image_token: int, tokens: int, bos: int, pad: int) -> tuple[Any, Any]:
    """Two pages, the second with a shorter prompt and right padding. (Eager PyTorch refuses a
    batch whose pixel rows outnumber its pages, so queries are checked by the tests.)"""
    import torch

    long_page = [image_token] * tokens + [bos, 3, 4, 5]
    short_page = [image_token] * tokens + [bos, 6]
    width = len(long_page)
    ids = torch.tensor([long_page, short_page + [pad] * (width - len(short_page))])
    lengths = torch.tensor([[len(long_page)], [len(short_page)]])
    return ids, (torch.arange(width)[None, :] < lengths).long()


def plan_colpali(request: ExportRequest) -> ExportPlan:
    import torch
    import transformers

    loaded: Any = transformers.ColPaliForRetrieval.from_pretrained(
        str(request.source), attn_implementation="eager"
    )
    model = loaded.eval()
    vlm = model.config.vlm_config
    image_token = int(vlm.image_token_id)
    size = int(vlm.vision_config.image_size)
    tokens = (size // int(vlm.vision_config.patch_size)) ** 2
    bos = int(getattr(vlm.text_config, "bos_token_id", None) or 2)
    pad = int(getattr(vlm.text_config, "pad_token_id", None) or 0)
    ids, mask = _example_pages(image_token, tokens, bos, pad)
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    names = ["input_ids", "attention_mask", "pixel_values"]
    module = keyword_module(model, lambda m, **kw: m(**kw).embeddings, names)
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "pixel_values": {0: "batch"},
        "embeddings": {0: "batch", 1: "sequence"},
    }
    spec: dict[str, Any] = {
        "dim": int(model.config.embedding_dim),
        "max_length": request.max_length or 512,
        "query_prefix": QUERY_PREFIX,
        "options": {
            "image_token_id": image_token,
            "image_tokens": tokens,
            "bos_token_id": bos,
            "image_prompt": IMAGE_PROMPT,
            "query_suffix": QUERY_SUFFIX,
        },
    }
    return ExportPlan(
        module,
        {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels},
        ["embeddings"],
        axes,
        spec,
        compare_mask=mask,
    )

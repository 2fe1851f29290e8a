"""The kinds by name: a plain dict from kind (or ``kind/family``) to its handler."""

from __future__ import annotations

from service.models.catalogue import ModelSpec
from service.models.kinds import (
    bm25,
    bm42,
    colmodernvbert,
    dense,
    if_splade,
    image,
    late,
    m3,
    minicoil,
    multimodal,
    rerank,
    sparse,
    static,
)
from service.models.kinds.contract import KindHandler

KIND_HANDLERS: dict[str, KindHandler] = {
    "dense": dense.HANDLER,
    "dense/static": static.HANDLER,
    "late": late.HANDLER,
    "rerank": rerank.HANDLER,
    "sparse": sparse.HANDLER,
    "sparse/bm25": bm25.HANDLER,
    "sparse/bm42": bm42.HANDLER,
    "sparse/if_splade": if_splade.HANDLER,
    "sparse/minicoil": minicoil.HANDLER,
    "image": image.HANDLER,
    "multimodal": multimodal.HANDLER,
    "multimodal/colmodernvbert": colmodernvbert.HANDLER,
    "m3": m3.HANDLER,
}


def handler_for(spec: ModelSpec) -> KindHandler:
    """The kind's handler, or a family's (``kind/options.family``) where one is registered."""
    family = f"{spec.kind}/{spec.options.get('family', '')}"
    return KIND_HANDLERS.get(family) or KIND_HANDLERS[spec.kind]

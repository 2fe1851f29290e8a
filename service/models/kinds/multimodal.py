"""Multimodal late interaction (ColPali): pages as images and text queries into multi-vectors,
through one graph that takes input_ids, attention_mask and pixel_values.

Prompt layouts (PaliGemma's, as ColPali and FastEmbed use them), from the catalogue options:

- a page: ``<image>`` x ``image_tokens``, ``<bos>``, then ``image_prompt`` ("Describe the
  image.\\n"), tokenized without special tokens;
- a query: ``<bos>``, then ``query_prefix`` + query + ``query_suffix`` (ten ``<pad>`` tokens
  as "query augmentation" buffers, then "\\n"), tokenized without special tokens.

A query carries no image tokens; the graph still takes a pixel array per row, so queries get
zeros there, which no token reads. The graph splices image features into image-token
positions in batch order, so ``collate`` puts pages before queries and ``postprocess`` puts
the results back in the order the batcher gave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from service.errors import InvalidInput, PayloadTooLarge
from service.models.catalogue import ModelSpec
from service.models.images import ImageConfig, Pixels, decode_image, load_image_config, preprocess
from service.models.kinds.contract import Feeds, KindHandler

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

MultiVectors = npt.NDArray[np.float32]  # (tokens, dim)
ORDER_FEED = "_order"  # not a graph input: the runner feeds only the graph's own inputs


@dataclass(frozen=True)
class Prompting:
    image_token_id: int
    image_tokens: int
    bos_id: int
    image_prompt_ids: tuple[int, ...]
    image: ImageConfig
    tokenizer: Tokenizer  # without padding or truncation: prompts are counted whole


@dataclass(frozen=True, slots=True)
class Item:
    ids: npt.NDArray[np.int64]
    pixels: Pixels | None = None  # None: a query


def prompting(model: LoadedModel) -> Prompting:
    value: Prompting = model.resources
    return value


def _encode(model: LoadedModel, text: str) -> list[int]:
    return list(prompting(model).tokenizer.encode(text, add_special_tokens=False).ids)


def load_resources(spec: ModelSpec, directory: Path) -> Prompting:
    options = spec.options
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    prompt = str(options.get("image_prompt", "Describe the image.\n"))
    return Prompting(
        image_token_id=int(options["image_token_id"]),
        image_tokens=int(options["image_tokens"]),
        bos_id=int(options["bos_token_id"]),
        image_prompt_ids=tuple(tokenizer.encode(prompt, add_special_tokens=False).ids),
        image=load_image_config(directory),
        tokenizer=tokenizer,
    )


def query_ids(model: LoadedModel, text: str, index: int = 0) -> npt.NDArray[np.int64]:
    suffix = str(model.spec.options.get("query_suffix", "<pad>" * 10 + "\n"))
    p = prompting(model)
    ids = [p.bos_id, *_encode(model, model.spec.query_prefix + text + suffix)]
    return checked_query(model, ids, p.image_token_id, index)


def checked_query(
    model: LoadedModel, ids: Sequence[int], image_token_id: int, index: int
) -> npt.NDArray[np.int64]:
    """A query's ids with its prompt, refused if over the model's limit (413) or if it holds
    the image token (400: it would ask the graph for image features it does not have)."""
    if len(ids) > model.spec.max_length:
        raise PayloadTooLarge(
            f"query {index} has {len(ids)} tokens with its prompt; the limit is "
            f"{model.spec.max_length}",
            param="queries",
        )
    if image_token_id in ids:
        raise InvalidInput(f"query {index} contains the model's image token", param="queries")
    return np.asarray(ids, dtype=np.int64)


def pad_ids(
    rows: Sequence[npt.NDArray[np.int64]], pad_id: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rows of token ids right-padded to the longest: input_ids and attention_mask."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
        mask[index, : len(row)] = 1
    return ids, mask


def image_ids(model: LoadedModel) -> npt.NDArray[np.int64]:
    p = prompting(model)
    return np.asarray(
        [p.image_token_id] * p.image_tokens + [p.bos_id, *p.image_prompt_ids], dtype=np.int64
    )


def prepare_queries(model: LoadedModel, texts: Sequence[str]) -> list[tuple[int, Item]]:
    items = [Item(query_ids(model, text, i)) for i, text in enumerate(texts)]
    return [(len(item.ids), item) for item in items]


def prepare_pages(
    model: LoadedModel, images: Sequence[bytes], max_pixels: int
) -> list[tuple[int, Item]]:
    ids = image_ids(model)
    config = prompting(model).image
    return [
        (len(ids), Item(ids, preprocess(decode_image(data, i, max_pixels), config)))
        for i, data in enumerate(images)
    ]


def collate(model: LoadedModel, payloads: Sequence[Item]) -> Feeds:
    order = sorted(range(len(payloads)), key=lambda i: payloads[i].pixels is None)
    items = [payloads[i] for i in order]
    ids, mask = pad_ids([item.ids for item in items], model.encoder.pad_id)
    height, width = prompting(model).image.output_size or (448, 448)
    pixels = np.zeros((len(items), 3, height, width), dtype=np.float32)
    for row, item in enumerate(items):
        if item.pixels is not None:
            pixels[row] = item.pixels
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        ORDER_FEED: np.asarray(order, dtype=np.int64),
    }


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[MultiVectors]:
    """One (tokens, dim) array per payload: the vectors of its unpadded tokens."""
    embeddings = np.asarray(outputs[0], dtype=np.float32)
    lengths = feeds["attention_mask"].sum(axis=1)
    results: list[MultiVectors] = [np.zeros((0, 0), dtype=np.float32)] * len(payloads)
    for row, original in enumerate(feeds[ORDER_FEED].tolist()):
        results[original] = embeddings[row, : int(lengths[row])]
    return results


@dataclass(frozen=True)
class Sides:
    """A multimodal family's request side: queries, and page images (with the pixel limit),
    into the items its batcher takes."""

    queries: Callable[[LoadedModel, Sequence[str]], list[tuple[int, Any]]]
    pages: Callable[[LoadedModel, Sequence[bytes], int], list[tuple[int, Any]]]


def maxsim(queries: Sequence[MultiVectors], pages: Sequence[MultiVectors]) -> list[list[float]]:
    """Late-interaction scores: for each query token its best dot product over a page's
    tokens, summed over the query's tokens; one row per query, one column per page."""
    return [[float((q @ p.T).max(axis=1).sum()) for p in pages] for q in queries]


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    height, width = prompting(model).image.output_size or (448, 448)
    page = Item(image_ids(model), np.zeros((3, height, width), dtype=np.float32))
    return [(len(page.ids), page), *prepare_queries(model, ["warm up"])]


HANDLER = KindHandler(
    sides=Sides(queries=prepare_queries, pages=prepare_pages),
    collate=collate,
    postprocess=postprocess,
    warmup=warmup,
    load_resources=load_resources,
    extra_files=("preprocessor_config.json",),
)

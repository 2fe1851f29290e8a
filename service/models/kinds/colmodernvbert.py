"""ColModernVBERT (multimodal late interaction over Idefics3 tiles): pages as images and text
queries into multi-vectors, through one graph that takes input_ids, attention_mask and
pixel_values, as FastEmbed 0.9.1 runs Qdrant/colmodernvbert's ``model_v2.onnx``.

- A page is cut into tiles (``service/models/tiling.py``). Its prompt is the row's
  ``image_prompt`` (``<|begin_of_text|>User:<image>Describe the image.<end_of_utterance>\\n
  Assistant:``) with ``<image>`` expanded Idefics3's way: per tile of the grid, row by row,
  ``<fake_token_around_image><row_R_col_C>`` and ``image_seq_len`` image tokens, a newline
  after each row, then a newline and the global view, ``<fake_token_around_image><global-img>``,
  its image tokens and ``<fake_token_around_image>``. An unsplit image (grid (0, 0)) has the
  global view only. The prompt is tokenized with the tokenizer's special tokens.
- A query is ``query + query_suffix`` (ten ``<end_of_utterance>``, "query augmentation"),
  tokenized with the special tokens.

The graph splices its tiles' features into the image-token positions in batch order and
drops blank (all-zero) tiles, so the tiles of a batch travel as one row, (1, tiles, 3, S, S),
in the order of the pages that own them, and a batch of queries only gets one blank tile (as
FastEmbed sends with text). Rows are padded on the right: a token keeps its position whatever
the batch, so each input's vectors do not depend on its companions.

A page costs the batcher its tokens plus its tiles' vision patches ((image_size / patch_size)²
a tile, 1,024 for the real model): the vision tower's work and memory grow with the tiles, so
under the default 8,192-token budget a page of 17 tiles is a batch of its own (FastEmbed
embeds two pages a batch by default, for the same reason).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from service.errors import ModelLoadError, PayloadTooLarge
from service.models.catalogue import ModelSpec
from service.models.images import Pixels, decode_image
from service.models.kinds.contract import Feeds, KindHandler
from service.models.kinds.multimodal import MultiVectors, Sides, checked_query, pad_ids
from service.models.tiling import TilingConfig, load_tiling_config, split_image

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

IMAGE = "<image>"
AROUND = "<fake_token_around_image>"
GLOBAL = "<global-img>"
VISUAL_PROMPT = "<|begin_of_text|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"
QUERY_SUFFIX = "<end_of_utterance>" * 10


@dataclass(frozen=True)
class Prompting:
    tokenizer: Tokenizer  # without padding or truncation: prompts are counted whole
    tiling: TilingConfig
    image_seq_len: int  # image tokens per tile (processor_config.json)
    image_token_id: int
    blank_size: int  # the edge of the blank tile a batch without pages gets
    tile_cost: int  # what a tile adds to a page's cost in the batcher: its vision patches
    visual_prompt: str
    query_suffix: str
    # A page's token ids by its grid (rows, cols), made on first use (a race makes one twice).
    pages: dict[tuple[int, int], npt.NDArray[np.int64]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Item:
    ids: npt.NDArray[np.int64]
    tiles: Pixels | None = None  # None: a query


def prompting(model: LoadedModel) -> Prompting:
    value: Prompting = model.resources
    return value


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"{path.parent} has no {path.name}")
    value: dict[str, Any] = json.loads(path.read_text())
    return value


def load_resources(spec: ModelSpec, directory: Path) -> Prompting:
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    image_token_id = tokenizer.token_to_id(IMAGE)
    if image_token_id is None:
        raise ModelLoadError(f"{directory}: the tokenizer has no {IMAGE} token")
    tiling = load_tiling_config(directory)
    config = _json(directory / "config.json") if (directory / "config.json").is_file() else {}
    vision = config.get("vision_config", {})
    image_seq_len = int(_json(directory / "processor_config.json").get("image_seq_len", 64))
    size = int(vision.get("image_size", tiling.tile))
    patch = vision.get("patch_size")
    return Prompting(
        tokenizer=tokenizer,
        tiling=tiling,
        image_seq_len=image_seq_len,
        image_token_id=int(image_token_id),
        blank_size=size,
        tile_cost=(size // int(patch)) ** 2 if patch else image_seq_len,
        visual_prompt=str(spec.options.get("image_prompt", VISUAL_PROMPT)),
        query_suffix=str(spec.options.get("query_suffix", QUERY_SUFFIX)),
    )


def image_prompt(p: Prompting, rows: int, cols: int) -> str:
    """The visual prompt with its image token expanded for a grid of rows x cols tiles."""
    tokens = IMAGE * p.image_seq_len
    whole = f"{AROUND}{GLOBAL}{tokens}{AROUND}"
    grid = "".join(
        "".join(f"{AROUND}<row_{r + 1}_col_{c + 1}>{tokens}" for c in range(cols)) + "\n"
        for r in range(rows)
    )
    return p.visual_prompt.replace(IMAGE, f"{grid}\n{whole}" if rows else whole)


def page_ids(model: LoadedModel, rows: int, cols: int) -> npt.NDArray[np.int64]:
    p = prompting(model)
    ids = p.pages.get((rows, cols))
    if ids is None:
        encoded = p.tokenizer.encode(image_prompt(p, rows, cols)).ids
        ids = p.pages[(rows, cols)] = np.asarray(encoded, dtype=np.int64)
    return ids


def query_ids(model: LoadedModel, text: str, index: int = 0) -> npt.NDArray[np.int64]:
    p = prompting(model)
    ids = p.tokenizer.encode(model.spec.query_prefix + text + p.query_suffix).ids
    return checked_query(model, ids, p.image_token_id, index)


def prepare_queries(model: LoadedModel, texts: Sequence[str]) -> list[tuple[int, Item]]:
    items = [Item(query_ids(model, text, i)) for i, text in enumerate(texts)]
    return [(len(item.ids), item) for item in items]


def page_item(model: LoadedModel, data: bytes, index: int, max_pixels: int) -> Item:
    tiles = split_image(decode_image(data, index, max_pixels), prompting(model).tiling)
    ids = page_ids(model, tiles.rows, tiles.cols)
    if len(ids) > model.spec.max_length:
        raise PayloadTooLarge(
            f"image {index} makes {len(tiles.pixels)} tiles, {len(ids)} tokens; the limit is "
            f"{model.spec.max_length}",
            param="images",
        )
    return Item(ids, tiles.pixels)


def prepare_pages(
    model: LoadedModel, images: Sequence[bytes], max_pixels: int
) -> list[tuple[int, Item]]:
    items = [page_item(model, data, i, max_pixels) for i, data in enumerate(images)]
    return [(page_cost(model, item), item) for item in items]


def page_cost(model: LoadedModel, item: Item) -> int:
    tiles = 0 if item.tiles is None else len(item.tiles)
    return len(item.ids) + tiles * prompting(model).tile_cost


def collate(model: LoadedModel, payloads: Sequence[Item]) -> Feeds:
    ids, mask = pad_ids([item.ids for item in payloads], model.encoder.pad_id)
    tiles = [item.tiles for item in payloads if item.tiles is not None]
    if tiles:
        pixels = np.concatenate(tiles)[None]
    else:
        size = prompting(model).blank_size
        pixels = np.zeros((1, 1, 3, size, size), dtype=np.float32)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[MultiVectors]:
    """One (tokens, dim) array per payload: the vectors of its unpadded tokens."""
    rows = len(payloads)
    embeddings = np.asarray(outputs[0], dtype=np.float32).reshape(rows, -1, model.spec.dim or 0)
    lengths = feeds["attention_mask"].sum(axis=1).tolist()
    return [embeddings[row, : int(lengths[row])] for row in range(rows)]


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    """A one-tile page (grey, not blank: the graph drops blank tiles) and a query."""
    tile = prompting(model).tiling.tile
    page = Item(page_ids(model, 0, 0), np.full((1, 3, tile, tile), 0.5, dtype=np.float32))
    return [(page_cost(model, page), page), *prepare_queries(model, ["warm up"])]


HANDLER = KindHandler(
    sides=Sides(queries=prepare_queries, pages=prepare_pages),
    collate=collate,
    postprocess=postprocess,
    warmup=warmup,
    load_resources=load_resources,
    extra_files=("preprocessor_config.json",),
)

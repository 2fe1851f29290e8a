"""Idefics3 image splitting (ColModernVBERT's pages): an image into square tiles, as FastEmbed
0.9.1 prepares it from an ``Idefics3ImageProcessor`` preprocessor_config.json.

1. ``do_resize``: the longest edge goes to ``size.longest_edge`` (up or down, the other edge
   scaled and floored, both rounded up to even);
2. ``do_image_splitting``: both edges go up to multiples of the tile edge
   (``max_image_size.longest_edge``), keeping the aspect ratio as far as that allows; an image
   larger than one tile is cut into a rows x cols grid of tiles, read row by row, and the
   whole image, squeezed to one tile, follows as the global view. An image of one tile is
   not split: grid (0, 0). Without splitting, the image is squeezed to one tile;
3. each tile rescaled and normalised (``images.scaled``).

Every resize is Pillow's, with the config's filter (Lanczos by default), on 8-bit RGB.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.errors import ModelLoadError
from service.models.images import Pixels, scaled

IDEFICS3_MEAN = (0.5, 0.5, 0.5)
LANCZOS = 1


@dataclass(frozen=True)
class TilingConfig:
    tile: int = 512  # a tile's edge in pixels (max_image_size.longest_edge)
    longest_edge: int | None = None  # do_resize: the longest edge first goes to this
    split: bool = True  # do_image_splitting; otherwise the image is squeezed to one tile
    resample: int = LANCZOS  # Pillow's filter number
    rescale: float | None = 1 / 255
    mean: tuple[float, ...] | None = IDEFICS3_MEAN
    std: tuple[float, ...] | None = IDEFICS3_MEAN


@dataclass(frozen=True, slots=True)
class Tiles:
    pixels: Pixels  # (tiles, 3, tile, tile): the grid row by row, then the global view
    rows: int  # (0, 0): one tile, not split
    cols: int


def tiling_config_from_dict(raw: Mapping[str, Any]) -> TilingConfig:
    """The tiling of an Idefics3 preprocessor_config.json, read as FastEmbed reads it (a
    missing ``do_resize``, ``do_image_splitting`` or ``do_normalize`` is off)."""
    kind = raw.get("image_processor_type")
    if kind != "Idefics3ImageProcessor":
        raise ValueError(f"image_processor_type is {kind!r}, not Idefics3ImageProcessor")
    longest = None
    if raw.get("do_resize", False):
        longest = int(raw["size"]["longest_edge"])
    normalise = raw.get("do_normalize", False)
    mean = raw.get("image_mean") if normalise else raw.get("mean")
    std = raw.get("image_std") if normalise else raw.get("std")
    return TilingConfig(
        tile=int(raw.get("max_image_size", {}).get("longest_edge", 512)),
        longest_edge=longest,
        split=bool(raw.get("do_image_splitting", False)),
        resample=int(raw.get("resample", LANCZOS)),
        rescale=float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else None,
        mean=None if mean is None or std is None else tuple(float(v) for v in mean),
        std=None if mean is None or std is None else tuple(float(v) for v in std),
    )


def load_tiling_config(directory: Path) -> TilingConfig:
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no preprocessor_config.json")
    try:
        return tiling_config_from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def _even(value: int) -> int:
    return max(1, value + value % 2)


def longest_edge_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """(height, width) with the longest edge at `longest`, the other scaled and floored; both
    rounded up to even."""
    if width >= height:
        return _even(int(longest / (width / height))), _even(longest)
    return _even(longest), _even(int(longest * (width / height)))


def _up_to(value: float, tile: int) -> int:
    return max(tile, math.ceil(value / tile) * tile)


def encoder_shape(height: int, width: int, tile: int) -> tuple[int, int]:
    """(height, width), both multiples of the tile edge: the longer edge rounded up, the other
    scaled from it (floored), then rounded up."""
    aspect = width / height
    if width >= height:
        new_width = _up_to(width, tile)
        return _up_to(int(new_width / aspect), tile), new_width
    new_height = _up_to(height, tile)
    return new_height, _up_to(int(new_height * aspect), tile)


def _resized(image: Image.Image, height: int, width: int, resample: int) -> Image.Image:
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), resample=resample)


def split_image(image: Image.Image, config: TilingConfig) -> Tiles:
    """An RGB image into its tiles and grid."""
    tile = config.tile
    if config.longest_edge is not None:
        shape = longest_edge_shape(image.height, image.width, config.longest_edge)
        image = _resized(image, *shape, config.resample)
    rows = cols = 0
    if not config.split:
        frames = [np.asarray(_resized(image, tile, tile, config.resample))]
    else:
        image = _resized(image, *encoder_shape(image.height, image.width, tile), config.resample)
        whole = np.asarray(image)
        frames = [whole]
        if image.height > tile or image.width > tile:
            rows, cols = image.height // tile, image.width // tile
            frames = [
                whole[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
                for r in range(rows)
                for c in range(cols)
            ]
            frames.append(np.asarray(_resized(image, tile, tile, config.resample)))
    pixels = [scaled(f.transpose(2, 0, 1), config.rescale, config.mean, config.std) for f in frames]
    return Tiles(np.stack(pixels), rows, cols)

"""Image embeddings (CLIP vision towers, ResNet, Unicom): pixel arrays in, one vector out.

Requests are decoded and preprocessed (``prepare_images``) in the batcher's prepare thread;
the queue holds (3, H, W) float32 arrays, each of "length" 1, so a batch is capped by
``max_batch_items``. The graph's input is ``options.image_input`` (default ``pixel_values``);
its output is ``options.pooled_output`` (default 0), already one vector per image, or token
states whose first (CLS) row is taken, or a feature map that is flattened.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from service.models.catalogue import ModelSpec
from service.models.images import ImageConfig, Pixels, decode_image, load_image_config, preprocess
from service.models.kinds.contract import Feeds, KindHandler, output_index

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

Vectors = npt.NDArray[np.float32]


def image_config(model: LoadedModel) -> ImageConfig:
    config: ImageConfig = model.resources
    return config


def prepare_images(
    model: LoadedModel, images: Sequence[bytes], max_pixels: int
) -> list[tuple[int, Pixels]]:
    """Decode and preprocess every image of a request (blocking: runs in a thread)."""
    config = image_config(model)
    return [
        (1, preprocess(decode_image(data, i, max_pixels), config)) for i, data in enumerate(images)
    ]


def collate(model: LoadedModel, payloads: Sequence[Pixels]) -> Feeds:
    name = str(model.spec.options.get("image_input", "pixel_values"))
    return {name: np.stack(payloads)}


def to_vectors(output: npt.NDArray[Any]) -> Vectors:
    """One vector per image from (batch, dim), (batch, tokens, dim) or (batch, C, H, W)."""
    array = np.asarray(output, dtype=np.float32)
    if array.ndim == 3:
        return array[:, 0]
    return array.reshape(array.shape[0], -1)


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[Vectors]:
    return list(
        to_vectors(outputs[output_index(model, model.spec.options.get("pooled_output", 0))])
    )


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    config = image_config(model)
    height, width = config.output_size or (224, 224)
    return [(1, np.zeros((3, height, width), dtype=np.float32))]


def load_resources(spec: ModelSpec, directory: Path) -> ImageConfig:
    return load_image_config(directory)


HANDLER = KindHandler(
    collate=collate,
    postprocess=postprocess,
    warmup=warmup,
    needs_text=False,
    load_resources=load_resources,
    extra_files=("preprocessor_config.json",),
)

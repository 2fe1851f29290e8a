"""Image decoding and preprocessing against transformers' CLIPImageProcessor (its PIL backend,
the one that runs without torchvision), on images in odd sizes and modes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from service.models.images import decode_image, image_config_from_dict, preprocess, scaled
from tests import image_models

CONFIGS = {
    "clip_default": {},
    "tiny_test_model": {
        "size": {"shortest_edge": 40},
        "crop_size": {"height": 32, "width": 32},
        "image_mean": [0.5, 0.4, 0.3],
        "image_std": [0.2, 0.25, 0.3],
    },
    "bilinear_tall_crop": {
        "size": {"shortest_edge": 64},
        "crop_size": {"height": 96, "width": 80},
        "resample": 2,
    },
    "no_resize_padded_crop": {"do_resize": False, "crop_size": {"height": 48, "width": 48}},
    "exact_size_no_crop": {
        "size": {"height": 30, "width": 20},
        "do_center_crop": False,
        "resample": 1,
    },
}
MAX_PIXELS = 10_000_000


def reference(config: dict[str, Any]) -> Any:
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(**config)


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_pixels_equal_transformers_clip_image_processor(config_name: str) -> None:
    processor = reference(CONFIGS[config_name])
    config = image_config_from_dict(processor.to_dict())
    for name, data in image_models.sample_images().items():
        ours = preprocess(decode_image(data, 0, MAX_PIXELS), config)
        theirs = processor(Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"][0]
        assert ours.dtype == np.float32 and ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0, err_msg=name)


def test_exif_orientation_is_applied() -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = image_models.encoded(image, "PNG", exif=exif)
    decoded = decode_image(data, 0, MAX_PIXELS)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert decoded.size == (30, 50) == upright.size
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(upright))
    rotated = image.transpose(Image.Transpose.ROTATE_270)
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(rotated))


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (24, 16), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = np.asarray(decode_image(buffer.getvalue(), 0, MAX_PIXELS))
    assert decoded.shape == (16, 24, 3)
    assert decoded[..., 0].min() > 200 and decoded[..., 2].max() < 50  # red, not blue


def test_transparency_is_composited_on_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    decoded = np.asarray(decode_image(image_models.encoded(image), 0, MAX_PIXELS))
    assert (decoded == 255).all()


def test_convnext_crop_pct_config() -> None:
    config = image_config_from_dict(
        {"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3}
    )
    assert config.shortest_edge == 256 and config.crop == (224, 224)
    large = image_config_from_dict({"size": {"shortest_edge": 384}, "crop_pct": 0.875})
    assert large.resize_to == (384, 384) and large.crop is None


def test_jina_clip_config_equals_clip_resize_and_centre_crop() -> None:
    """Jina CLIP's processor (size int, interpolation name, mean/std keys) resizes the shortest
    edge and pads to a square, cropping the long side centrally: CLIP's pixels."""
    mean, std = [0.48, 0.45, 0.4], [0.26, 0.26, 0.27]
    jina = image_config_from_dict(
        {
            "image_processor_type": "JinaCLIPImageProcessor",
            "size": 56,
            "interpolation": "bicubic",
            "mean": mean,
            "std": std,
        }
    )
    processor = reference(
        {
            "size": {"shortest_edge": 56},
            "crop_size": {"height": 56, "width": 56},
            "image_mean": mean,
            "image_std": std,
        }
    )
    for name, data in image_models.sample_images().items():
        ours = preprocess(decode_image(data, 0, MAX_PIXELS), jina)
        theirs = processor(Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0, err_msg=name)


def test_catalogue_lists_fastembeds_image_models() -> None:
    from service.models.catalogue import load_catalogue

    catalogue = load_catalogue()
    dims = {name: spec.dim for name, spec in catalogue.items() if spec.kind == "image"}
    assert dims == {
        "Qdrant/clip-ViT-B-32-vision": 512,
        "Qdrant/resnet50-onnx": 2048,
        "Qdrant/Unicom-ViT-B-16": 768,
        "Qdrant/Unicom-ViT-B-32": 512,
        "jinaai/jina-clip-v1-vision": 768,
        "nomic-ai/nomic-embed-vision-v1.5": 768,
        "nomic-ai/nomic-embed-vision-v1.5-Q": 768,
        "google/siglip2-base-patch16-224-vision": 768,
    }
    # the matching text towers are dense rows with the same dimension
    assert catalogue["Qdrant/clip-ViT-B-32-text"].dim == 512
    assert catalogue["jinaai/jina-clip-v1"].dim == 768
    assert catalogue["nomic-ai/nomic-embed-text-v1.5"].dim == 768


def test_siglip_config_resizes_to_a_fixed_size_without_crop() -> None:
    """PaliGemma / ColPali pages: SigLIP's processor warps to height x width, no crop."""
    from transformers import SiglipImageProcessorPil

    processor = SiglipImageProcessorPil(size={"height": 48, "width": 40})
    raw = {k: v for k, v in processor.to_dict().items() if k != "resample"} | {"resample": 3}
    config = image_config_from_dict(raw)
    assert config.crop is None and config.resize_to == (48, 40)
    for name, data in image_models.sample_images().items():
        ours = preprocess(decode_image(data, 0, MAX_PIXELS), config)
        theirs = processor(Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0, err_msg=name)


def test_mutated_files_give_client_errors_only() -> None:
    """Random byte damage to images of every format: a decoded array or a 400/413, never
    another exception (which the service would answer with a 500)."""
    from service.errors import ServiceError

    rng = np.random.default_rng(7)
    config = image_config_from_dict(CONFIGS["tiny_test_model"])
    originals = list(image_models.sample_images().values())
    originals.append(image_models.encoded(Image.new("RGB", (20, 20), (1, 2, 3)), "TIFF"))
    originals.append(image_models.encoded(Image.new("RGB", (20, 20), (1, 2, 3)), "GIF"))
    outcomes = {"decoded": 0, "refused": 0}
    for trial in range(300):
        data = bytearray(originals[trial % len(originals)])
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        if trial % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        try:
            pixels = preprocess(decode_image(bytes(data), 0, MAX_PIXELS), config)
            assert pixels.shape == (3, 32, 32)
            outcomes["decoded"] += 1
        except ServiceError as error:
            assert error.status in (400, 413)
            outcomes["refused"] += 1
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0


@pytest.mark.parametrize(
    ("rescale", "mean", "std"),
    [
        (1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        (1 / 255, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        (1 / 255, None, None),
        (None, (0.1, 0.2, 0.3), (0.3, 0.2, 0.1)),
    ],
)
def test_scaling_8_bit_pixels_by_table_gives_the_arithmetics_bits(
    rescale: float | None, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> None:
    hwc = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    chw = hwc.transpose(2, 0, 1)  # a strided view, as the tiles are
    expected = chw.astype(np.float64) * rescale if rescale is not None else chw
    expected = expected.astype(np.float32)
    if mean is not None and std is not None:
        m = np.asarray(mean, dtype=np.float32)[:, None, None]
        s = np.asarray(std, dtype=np.float32)[:, None, None]
        expected = (expected - m) / s
    got = scaled(chw, rescale, mean, std)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))

"""A tiny randomly initialised CLIPModel built with transformers (a real tokenizer, a real
preprocessor_config.json), exported by the project's conversion command; and test images in
odd sizes and modes, made with Pillow."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from tests.exporting import convert

START, END = "<|startoftext|>", "<|endoftext|>"
WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "green", "house", "tree", "car", "the"]
IMAGE_SIZE = 32
RESIZE = 40  # shortest edge before the 32 x 32 centre crop
MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]


def write_clip_tokenizer(directory: Path) -> Tokenizer:
    vocab = {token: i for i, token in enumerate([START, END, *WORDS, "[UNK]"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, 0), (END, 1)]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    return tokenizer


def clip_config() -> Any:
    from transformers import CLIPConfig

    text = {
        "vocab_size": len(WORDS) + 3,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    vision = {
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def reference_processor() -> Any:
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": RESIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=MEAN,
        image_std=STD,
    )


def build_tiny_clip(root: Path) -> tuple[Any, Path, Path]:
    """Save a random CLIPModel checkpoint under root/ckpt and export both towers with
    `python -m service convert`; returns (torch model, vision dir, text dir)."""
    import torch
    from transformers import CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(clip_config()).eval()
    ckpt = root / "ckpt"
    model.save_pretrained(str(ckpt))
    write_clip_tokenizer(ckpt)
    reference_processor().save_pretrained(str(ckpt))
    vision, text = root / "vision", root / "text"
    for out, kind, name in ((vision, "image", "clip-vision"), (text, "clip-text", "clip-text")):
        convert(ckpt, out, "--kind", kind, "--name", f"tiny/{name}")
    return model, vision, text


# --- images ------------------------------------------------------------------------------------
def encoded(image: Image.Image, fmt: str = "PNG", **save: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def sample_images(seed: int = 0) -> dict[str, bytes]:
    """Odd sizes and every mode the service converts, as the bytes a client would send."""
    rng = np.random.default_rng(seed)

    def noise(height: int, width: int, channels: int) -> np.ndarray:
        shape = (height, width, channels) if channels > 1 else (height, width)
        return rng.integers(0, 256, shape, dtype=np.uint8)

    rgb = Image.fromarray(noise(37, 53, 3))
    palette = Image.fromarray(noise(45, 31, 3)).convert("P", palette=Image.Palette.ADAPTIVE)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    return {
        "rgb_37x53": encoded(rgb),
        "rgba_61x29": encoded(Image.fromarray(noise(61, 29, 4), "RGBA")),
        "grey_7x301": encoded(Image.fromarray(noise(7, 301, 1), "L")),
        "grey_alpha_33x33": encoded(Image.fromarray(noise(33, 33, 2), "LA")),
        "palette_45x31": encoded(palette),
        "palette_transparent": encoded(transparent),
        "cmyk_jpeg_50x41": encoded(Image.fromarray(noise(50, 41, 3)).convert("CMYK"), "JPEG"),
        "tiny_1x1": encoded(Image.fromarray(noise(1, 1, 3))),
        "smaller_than_crop_20x25": encoded(Image.fromarray(noise(20, 25, 3))),
        "large_jpeg_480x640": encoded(Image.fromarray(noise(480, 640, 3)), "JPEG", quality=90),
        "webp_64x99": encoded(Image.fromarray(noise(64, 99, 3)), "WEBP"),
    }

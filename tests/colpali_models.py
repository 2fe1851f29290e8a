"""A tiny randomly initialised ColPali (ColPaliForRetrieval over PaliGemma: SigLIP vision tower,
Gemma language model) built with transformers, with a Gemma-like tokenizer and a SigLIP
preprocessor_config.json, exported with the project's conversion command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from tests.exporting import convert

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
WORDS = ["Query:", "Describe", "the", "image.", "a", "red", "cat", "chart", "of", "sales", "page"]
NEWLINE = "\n"
IMAGE_SIZE, PATCH = 28, 14
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
VOCAB = {token: i for i, token in enumerate([*SPECIALS, *WORDS, NEWLINE, "<image>"])}
IMAGE_TOKEN_ID = VOCAB["<image>"]
PAD, BOS = VOCAB["<pad>"], VOCAB["<bos>"]


def write_tokenizer(directory: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in [*SPECIALS, "<image>"]])
    tokenizer.add_tokens([AddedToken(NEWLINE, normalized=False)])
    tokenizer.save(str(directory / "tokenizer.json"))
    return tokenizer


def preprocessor() -> Any:
    from transformers import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def build_tiny_colpali(root: Path) -> tuple[Any, Path]:
    import torch
    from transformers import ColPaliConfig, ColPaliForRetrieval, PaliGemmaConfig

    vlm = PaliGemmaConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH,
            "projection_dim": 32,
        },
        text_config={
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "vocab_size": len(VOCAB),
            "max_position_embeddings": 128,
            "bos_token_id": BOS,
            "pad_token_id": PAD,
            "eos_token_id": VOCAB["<eos>"],
        },
        image_token_index=IMAGE_TOKEN_ID,
        projection_dim=32,
    )
    torch.manual_seed(0)
    config = ColPaliConfig(vlm_config=vlm, embedding_dim=16)
    model = ColPaliForRetrieval(config).eval()
    ckpt, out = root / "ckpt", root / "colpali"
    model.save_pretrained(str(ckpt))
    write_tokenizer(ckpt)
    raw = preprocessor().to_dict()
    raw["resample"] = int(raw["resample"])
    (ckpt / "preprocessor_config.json").write_text(json.dumps(raw))
    convert(ckpt, out, "--kind", "multimodal", "--name", "tiny/colpali", "--max-length", "64")
    reference = ColPaliForRetrieval.from_pretrained(str(ckpt), attn_implementation="eager")
    return reference.eval(), out

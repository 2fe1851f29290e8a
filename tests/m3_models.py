"""A tiny BGE-M3 in FlagEmbedding's checkpoint layout: a random XLM-RoBERTa (config, weights,
tokenizer files AutoTokenizer loads) beside random ``colbert_linear.pt`` and
``sparse_linear.pt``; exported with the project's converter, which finds the layout itself."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from tests import late_models as lm
from tests.exporting import convert

NAME = "BAAI/bge-m3"
MAX_LENGTH = lm.MAX_LENGTH


def save_tokenizer_files(directory: Path) -> None:
    """tokenizer.json with XLM-R's specials, and the config files transformers reads."""
    lm.save_xlmr_tokenizer(directory)
    specials = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
    }
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MAX_LENGTH}
    (directory / "tokenizer_config.json").write_text(json.dumps({**config, **specials}))
    (directory / "special_tokens_map.json").write_text(json.dumps(specials))


def build_source(root: Path) -> Path:
    """The checkpoint directory, as FlagEmbedding saves BGE-M3 (heads with biases)."""
    import transformers

    torch.manual_seed(3)
    source = root / "bge-m3-src"
    save_tokenizer_files(source)
    config = lm.small_config("xlmr", len(lm.xlmr_vocab()))
    # Weights ten times the default scale: with 0.02 the [CLS] states of any two texts have a
    # cosine of 0.99998, too alike to tell a wrong row from the right one.
    config.initializer_range = 0.2
    encoder = transformers.XLMRobertaModel(config, add_pooling_layer=False).eval()
    encoder.save_pretrained(str(source))
    colbert = torch.nn.Linear(lm.HIDDEN, lm.HIDDEN)
    sparse = torch.nn.Linear(lm.HIDDEN, 1)
    with torch.no_grad():
        sparse.bias.fill_(0.3)  # most tokens get a weight, a few none (relu at zero)
    torch.save(colbert.state_dict(), str(source / "colbert_linear.pt"))
    torch.save(sparse.state_dict(), str(source / "sparse_linear.pt"))
    return source


@functools.cache
def built(root: Path) -> lm.Built:
    """Source and export once per test session; `reference` is the source directory."""
    root.mkdir(parents=True, exist_ok=True)
    source = build_source(root)
    out = root / "bge-m3"
    metadata = convert(source, out, "--name", NAME, "--max-length", str(MAX_LENGTH))
    return lm.Built(out, source, metadata)

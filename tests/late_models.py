"""Tiny randomly initialised checkpoints of the real architectures, for late interaction and
reranking: a ColBERT (BERT + bias-free projection, saved in HF_ColBERT's layout), a BERT and an
XLM-RoBERTa cross-encoder. Each is exported with the project's conversion command; the torch
modules stay in memory as the reference."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from tests.exporting import convert
from tests.tiny_models import bert_template

BERT_SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
PUNCTUATION = list(",.!?;:'\"()-")
WORDS = [
    "hello",
    "world",
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "fast",
    "slow",
    "red",
    "blue",
    "green",
    "what",
    "is",
    "where",
    "are",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "sun",
    "moon",
    "star",
    "sky",
    "sea",
]
HIDDEN = 32
COLBERT_DIM = 16
QUERY_LENGTH = 8
MAX_LENGTH = 24


def bert_vocab() -> dict[str, int]:
    return {token: i for i, token in enumerate([*BERT_SPECIALS, *PUNCTUATION, *WORDS])}


def xlmr_vocab() -> dict[str, int]:
    return {t: i for i, t in enumerate([*XLMR_SPECIALS, *PUNCTUATION, *WORDS, "<mask>"])}


def save_bert_tokenizer(directory: Path) -> Tokenizer:
    """A WordPiece tokenizer with BERT's normaliser, punctuation split and template."""
    vocab = bert_vocab()
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = bert_template(vocab)
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.enable_padding(length=64, pad_id=0, pad_token="[PAD]")  # as real files carry
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return tokenizer


def save_xlmr_tokenizer(directory: Path, vocab: dict[str, int] | None = None) -> Tokenizer:
    """XLM-R's specials and pair template (<s> A </s></s> B </s>, all type 0), pad id 1;
    over `vocab` (default: this module's XLM-R vocabulary)."""
    vocab = vocab or xlmr_vocab()
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    return tokenizer


def small_config(kind: str, vocab_size: int) -> Any:
    import transformers

    common = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": vocab_size,
    }
    if kind == "xlmr":
        return transformers.XLMRobertaConfig(
            **common,
            max_position_embeddings=MAX_LENGTH + 4,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
            num_labels=1,
        )
    return transformers.BertConfig(
        **common, max_position_embeddings=64, pad_token_id=0, num_labels=1
    )


class TinyColBERT(torch.nn.Module):
    """ColBERT's HF_ColBERT: `bert` (a BertModel) and `linear` (hidden -> dim, no bias)."""

    def __init__(self, config: Any) -> None:
        import transformers

        super().__init__()
        self.bert = transformers.BertModel(config, add_pooling_layer=False)
        self.linear = torch.nn.Linear(config.hidden_size, COLBERT_DIM, bias=False)

    @torch.no_grad()
    def vectors(self, ids: list[int], mask: list[int]) -> torch.Tensor:
        """Projected token vectors of one input, L2-normalised (the reference)."""
        inputs = torch.tensor([ids]), torch.tensor([mask])
        states = self.bert(input_ids=inputs[0], attention_mask=inputs[1]).last_hidden_state
        return torch.nn.functional.normalize(self.linear(states)[0], dim=-1)


@dataclass
class Built:
    directory: Path  # the exported model directory
    reference: Any  # the torch module
    metadata: dict[str, Any]


def build_colbert(root: Path) -> Built:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = root / "colbert-src"
    save_bert_tokenizer(source)
    config = small_config("bert", len(bert_vocab()))
    model = TinyColBERT(config).eval()
    config.architectures = ["HF_ColBERT"]
    config.save_pretrained(str(source))
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(source / "model.safetensors"))
    (source / "artifact.metadata").write_text(
        json.dumps(
            {
                "query_maxlen": QUERY_LENGTH,
                "doc_maxlen": 180,
                "dim": COLBERT_DIM,
                "query_token_id": "[unused0]",
                "doc_token_id": "[unused1]",
                "attend_to_mask_tokens": False,
            }
        )
    )
    out = root / "colbert"
    metadata = convert(
        source, out, "--kind", "late", "--name", "tiny/colbert", "--max-length", str(MAX_LENGTH)
    )
    return Built(out, model, metadata)


def build_cross_encoder(root: Path, kind: str) -> Built:
    import transformers

    torch.manual_seed(1)
    source = root / f"{kind}-ce-src"
    if kind == "xlmr":
        save_xlmr_tokenizer(source)
        config = small_config(kind, len(xlmr_vocab()))
        model = transformers.XLMRobertaForSequenceClassification(config).eval()
    else:
        save_bert_tokenizer(source)
        config = small_config(kind, len(bert_vocab()))
        model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(str(source))
    out = root / f"{kind}-ce"
    metadata = convert(
        source,
        out,
        "--kind",
        "rerank",
        "--name",
        f"tiny/{kind}-reranker",
        "--max-length",
        str(MAX_LENGTH),
    )
    return Built(out, model, metadata)


@torch.no_grad()
def cross_encoder_logit(model: Any, ids: list[int], types: list[int] | None = None) -> float:
    inputs = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
    }
    if types is not None:
        inputs["token_type_ids"] = torch.tensor([types])
    return float(model(**inputs).logits[0, 0])


@functools.cache
def built(name: str, root: Path) -> Built:
    """Build each tiny model once per test session (test modules share the cache)."""
    root.mkdir(parents=True, exist_ok=True)
    if name == "colbert":
        return build_colbert(root)
    return build_cross_encoder(root, name)

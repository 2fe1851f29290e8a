"""Tiny models the tests build themselves: a real `tokenizers` tokenizer and ONNX graphs made
with onnx.helper whose outputs are exactly predictable from their weight tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "hello",
    "world",
    "query:",
    "passage:",
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
    ",",
    ".",
    "!",
    "?",
]
DIM = 8
MAX_LENGTH = 16


def vocabulary(words: Sequence[str] = WORDS) -> dict[str, int]:
    return {token: i for i, token in enumerate([*SPECIALS, *words])}


def bert_template(vocab: dict[str, int]) -> processors.TemplateProcessing:
    """BERT's post-processor: [CLS] A [SEP], and [CLS] A [SEP] B [SEP] with B of type 1."""
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )


def write_tokenizer(
    directory: Path, words: Sequence[str] = WORDS, fixed_padding: int = 12
) -> Tokenizer:
    """A WordLevel tokenizer with BERT's specials and template; the saved file carries fixed
    padding and truncation, as real tokenizer.json files often do, which the service must undo."""
    vocab = vocabulary(words)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = bert_template(vocab)
    tokenizer.enable_padding(length=fixed_padding, pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=fixed_padding)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "config.json").write_text(json.dumps({"pad_token_id": 0}))
    return tokenizer


def embedding_table(rows: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


def save_graph(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], path: Path
) -> None:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def text_inputs() -> list[Any]:
    return [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]


def write_dense_graph(path: Path, table: np.ndarray) -> None:
    """last_hidden_state[b, t] = table[input_ids[b, t]] * attention_mask[b, t] + 0 * type."""
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["rows", "mask3"], ["masked"]),
        helper.make_node("Cast", ["token_type_ids"], ["typesf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["typesf", "last_axis"], ["types3"]),
        helper.make_node("Mul", ["types3", "zero"], ["no_types"]),
        helper.make_node("Add", ["masked", "no_types"], ["last_hidden_state"]),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "zero"),
    ]
    out = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", table.shape[1]]
    )
    save_graph(nodes, text_inputs(), [out], inits, path)


def write_metadata(directory: Path, spec: dict[str, Any], model_file: str = "model.onnx") -> None:
    metadata = {
        "spec": spec,
        "model_file": model_file,
        "variants": {"fp32": model_file},
        "default_cpu": "fp32",
        "default_gpu": "fp32",
    }
    (directory / "service_model.json").write_text(json.dumps(metadata))


def build_dense_model(
    directory: Path, *, name: str = "tiny/dense", pooling: str = "mean", normalize: bool = True
) -> np.ndarray:
    """A dense model directory; returns its embedding table (row i = token id i)."""
    write_tokenizer(directory)
    table = embedding_table(len(SPECIALS) + len(WORDS))
    write_dense_graph(directory / "model.onnx", table)
    spec = {
        "name": name,
        "kind": "dense",
        "dim": DIM,
        "pooling": pooling,
        "normalize": normalize,
        "max_length": MAX_LENGTH,
        "query_prefix": "query: ",
        "document_prefix": "passage: ",
    }
    write_metadata(directory, spec)
    return table


def token_ids(text: str) -> list[int]:
    """The ids the service feeds for a text: [CLS], its words cut to MAX_LENGTH, [SEP]."""
    vocab = vocabulary()
    words = text.lower().split()[: MAX_LENGTH - 2]
    return [vocab["[CLS]"], *(vocab.get(w, vocab["[UNK]"]) for w in words), vocab["[SEP]"]]


def expected_dense(
    table: np.ndarray, text: str, *, prefix: str = "", normalize: bool = True
) -> np.ndarray:
    """What the tiny dense model must return for a text: mean of its token rows."""
    vector = table[token_ids(prefix + text)].mean(axis=0)
    return vector / np.linalg.norm(vector) if normalize else vector


def write_tiny_bert(directory: Path, hidden: int = 16) -> Path:
    """A tiny randomly initialised BertModel checkpoint (seed 0) with the tiny tokenizer, for
    tests that export it with the converter; callers add the config files they need."""
    import torch
    import transformers

    write_tokenizer(directory)
    config = transformers.BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(directory))
    return directory

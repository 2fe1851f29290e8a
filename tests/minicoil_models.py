"""A tiny random miniCOIL laid out as FastEmbed loads ``Qdrant/minicoil-v1`` from a local
directory: a BERT encoder graph giving token states under onnx/model.onnx (standing in for
jina-embeddings-v2-small-en: the same WordPiece tokenizer layout, ``##`` continuations),
the tokenizer files beside it, and miniCOIL's own files: a random ``minicoil.triplet.model.npy``
(one hidden x 4 matrix per vocabulary word, row 0 the unknown word's), the vocabulary with its
stem table (``minicoil.triplet.model.vocab``, JSON) and ``stopwords.txt``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from py_rust_stemmers import SnowballStemmer

from tests import parity_models
from tests.late_models import HIDDEN

# Word pieces (and a symbol inside words) on top of the parity vocabulary, so that words are
# joined from pieces, and an unknown word holds a non-word character (9°9: split, then stemmed).
PIECES = ["##s", "##ed", "##ning", "run", "jump", "and", "over", "degree", "9", "°", "##°", "##9"]
# miniCOIL's vocabulary (ids from 1, in this order); "sky" is a stopword too (stopwords win).
VOCABULARY = ["cat", "dog", "star", "run", "jump", "sky", "sea", "blue", "red", "degree"]
STOPWORDS = ["the", "a", "is", "on", "are", "and", "what", "where", "sky", "over"]
DIMS = 4


def stem_table(words: list[str]) -> dict[str, str]:
    """Stem -> the shortest vocabulary word of that stem (the vocabulary file's table)."""
    stemmer = SnowballStemmer("english")
    table: dict[str, str] = {}
    for word in words:
        stem = stemmer.stem_word(word)
        if stem not in table or len(table[stem]) > len(word):
            table[stem] = word
    return table


def build(directory: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(29)
    base = parity_models.bert_vocab()
    vocab = {**base, **{piece: len(base) + i for i, piece in enumerate(PIECES)}}
    parity_models.save_bert_tokenizer(directory, vocab=vocab)
    config = parity_models.config("bert", len(vocab))
    config.save_pretrained(str(directory))
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    parity_models.export(
        lambda **kw: bert(**kw).last_hidden_state,
        [bert],
        directory / "onnx" / "model.onnx",
        parity_models.BERT_INPUTS,
        {"last_hidden_state": 3},
    )
    rng = np.random.default_rng(29)
    weights = (0.2 * rng.normal(size=(len(VOCABULARY) + 1, HIDDEN, DIMS))).astype(np.float32)
    np.save(directory / "minicoil.triplet.model.npy", weights)
    table = {"vocab": VOCABULARY, "stem_mapping": stem_table(VOCABULARY)}
    (directory / "minicoil.triplet.model.vocab").write_text(json.dumps(table))
    (directory / "stopwords.txt").write_text("\n".join(STOPWORDS) + "\n")
    return directory

"""The bench corpus (../shared/bench) and tokenization into sorted, padded batches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("BENCH_CORPUS", ROOT.parent / "shared" / "bench"))


def load(name: str, count: int) -> list[str]:
    lines = (CORPUS / name).read_text().splitlines()
    step = max(1, len(lines) // count)
    return [json.loads(line)["text"] for line in lines[::step][:count]]


def tokenizer(directory: Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


Batch = tuple[list[int], dict[str, np.ndarray]]


def sorted_batches(tok: Tokenizer, texts: list[str], size: int, sort: bool = True) -> list[Batch]:
    """Batches of `size` texts sorted by length (or in arrival order), right-padded."""
    encoded = [e.ids for e in tok.encode_batch_fast(texts)]  # as the service tokenizes
    order = (
        sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        if sort
        else list(range(len(texts)))
    )
    batches = []
    for start in range(0, len(order), size):
        index = order[start : start + size]
        width = max(len(encoded[i]) for i in index)
        ids = np.zeros((len(index), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, i in enumerate(index):
            ids[row, : len(encoded[i])] = encoded[i]
            mask[row, : len(encoded[i])] = 1
        batches.append(
            (
                index,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
        )
    return batches

"""A tiny random BERT checkpoint (with the tiny tokenizer) for the scaling tests, and its
PyTorch reference: token states pooled in numpy, independently of the converter's code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests import tiny_models

HIDDEN = 16


def build_tiny_bert(directory: Path) -> Path:
    tiny_models.write_tiny_bert(directory, HIDDEN)
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    return directory


def token_states(source: Path, ids: list[list[int]]) -> list[np.ndarray]:
    """PyTorch's last_hidden_state of each input, run alone (no padding at all)."""
    import torch
    import transformers

    model = transformers.BertModel.from_pretrained(str(source), attn_implementation="eager")
    model.eval()
    states = []
    with torch.no_grad():
        for row in ids:
            tensor = torch.tensor([row])
            out: Any = model(input_ids=tensor, attention_mask=torch.ones_like(tensor))
            states.append(out.last_hidden_state[0].numpy())
    return states


def reference_pooled(states: list[np.ndarray], how: str) -> np.ndarray:
    if how == "cls":
        return np.stack([s[0] for s in states])
    if how == "last":
        return np.stack([s[-1] for s in states])
    return np.stack([s.mean(axis=0) for s in states])

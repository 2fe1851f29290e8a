"""Late chunking on tiny randomly initialised models of the real architectures that
transformers ships: NomicBertModel (nomic-embed-text) and JinaEmbeddingsV3Model (jina v3's
XLM-RoBERTa with rotary positions; its task LoRA adapters are not part of transformers' class),
exported with the project's converter with token outputs. Each chunk's vector is the mean of
PyTorch's token states over the chunk's tokens, the document embedded once per window of the
model's context. (Jina v2's JinaBert exists only as Hub remote code: no tiny model of it.)"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

from tests import late_models
from tests.conftest import serving
from tests.exporting import EXPORT_WARNINGS, convert

pytestmark = EXPORT_WARNINGS
CONTEXT = 32
PREFIX = "search_document: "


@dataclass
class Nomic:
    client: TestClient
    model: Any  # the torch NomicBertModel: the reference
    tokenizer: Tokenizer


def tiny_checkpoint(architecture: str, source: Path) -> tuple[Any, Tokenizer]:
    import transformers

    common = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    }
    torch.manual_seed(0)
    if architecture == "nomic":
        tokenizer = late_models.save_bert_tokenizer(source)
        vocab = len(late_models.bert_vocab())
        model = transformers.NomicBertModel(
            transformers.NomicBertConfig(vocab_size=vocab, **common)
        )
    else:
        tokenizer = late_models.save_xlmr_tokenizer(source)
        config = transformers.JinaEmbeddingsV3Config(
            vocab_size=len(late_models.xlmr_vocab()),
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **common,
        )
        model = transformers.JinaEmbeddingsV3Model(config)
    model.eval().save_pretrained(str(source))
    tokenizer.no_padding()
    return model, tokenizer


@pytest.fixture(scope="module", params=["nomic", "jina-v3"])
def nomic(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nomic]:
    root = tmp_path_factory.mktemp(request.param)
    source = root / "src"
    model, tokenizer = tiny_checkpoint(request.param, source)
    out = root / "model"
    options = json.dumps({"late_chunking": True})
    args = ["--token-outputs", "--name", "tiny/nomic", "--max-length", str(CONTEXT)]
    metadata = convert(source, out, *args, "--options", options)
    assert metadata["export"]["outputs"] == ["last_hidden_state"]
    metadata["spec"]["document_prefix"] = PREFIX
    (out / "service_model.json").write_text(json.dumps(metadata))
    with serving(models=[str(out)]) as client:
        yield Nomic(client, model, tokenizer)


def text_of(seed: int, words: int) -> str:
    rng = random.Random(seed)
    parts = [
        rng.choice(late_models.WORDS) + rng.choice([" ", " ", ", ", ". "]) for _ in range(words)
    ]
    return "".join(parts).strip()


@torch.no_grad()
def token_states(nomic: Nomic, ids: list[int]) -> np.ndarray:
    inputs = torch.tensor([ids])
    out = nomic.model(input_ids=inputs, attention_mask=torch.ones_like(inputs))
    return np.asarray(out.last_hidden_state[0], dtype=np.float32)


def late(nomic: Nomic, text: str, **chunking: Any) -> dict[str, Any]:
    body = {"inputs": [text], "input_type": "document", "chunking": {"late": True, **chunking}}
    response = nomic.client.post("/embed/dense", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def test_one_window_pools_the_documents_token_states_per_chunk(nomic: Nomic) -> None:
    text = text_of(0, 14)
    body = late(nomic, text, max_tokens=6, overlap_tokens=2)
    chunks = body["documents"][0]["chunks"]
    assert len(chunks) >= 3
    # the reference: the whole prefixed document through PyTorch, once
    encoding = nomic.tokenizer.encode(PREFIX + text)
    assert len(encoding.ids) <= CONTEXT  # one window
    states = token_states(nomic, encoding.ids)
    shift = len(PREFIX)
    for chunk in chunks:
        rows = [
            i
            for i, (start, end) in enumerate(encoding.offsets)
            if encoding.type_ids[i] == 0
            and end > start
            and start >= chunk["start"] + shift
            and end <= chunk["end"] + shift
        ]
        assert chunk["tokens"] == len(rows) <= 6
        np.testing.assert_allclose(chunk["embedding"], unit(states[rows].mean(axis=0)), atol=2e-5)
    assert body["usage"]["prompt_tokens"] == len(encoding.ids)
    # in context, a chunk's vector is not what its text gets alone
    pieces = [text[c["start"] : c["end"]] for c in chunks]
    alone = nomic.client.post(
        "/embed/dense", json={"inputs": pieces, "input_type": "document"}
    ).json()["embeddings"]
    cosines = [float(np.dot(c["embedding"], a)) for c, a in zip(chunks, alone, strict=True)]
    assert min(cosines) < 0.999


def test_a_longer_document_is_embedded_in_windows_of_whole_chunks(nomic: Nomic) -> None:
    text = text_of(1, 60)
    body = late(nomic, text, max_tokens=8)
    chunks = body["documents"][0]["chunks"]
    whole = nomic.tokenizer.encode(text, add_special_tokens=False)
    starts = [start for start, _ in whole.offsets]
    prefix_ids = nomic.tokenizer.encode(PREFIX, add_special_tokens=False).ids
    width = CONTEXT - 2 - len(prefix_ids)
    # chunks as token ranges of the document, grouped greedily into windows that hold them
    ranges = [(starts.index(c["start"]), starts.index(c["start"]) + c["tokens"]) for c in chunks]
    groups: list[list[int]] = []
    for index, (_, stop) in enumerate(ranges):
        if groups and stop - ranges[groups[-1][0]][0] <= width:
            groups[-1].append(index)
        else:
            groups.append([index])
    assert len(groups) >= 3
    cls, sep = whole_specials(nomic)
    used = 0
    for group in groups:
        begin, end = ranges[group[0]][0], ranges[group[-1]][1]
        ids = [cls, *prefix_ids, *whole.ids[begin:end], sep]
        used += len(ids)
        states = token_states(nomic, ids)
        for index in group:
            first, stop = ranges[index]
            at = 1 + len(prefix_ids) - begin
            expected = unit(states[at + first : at + stop].mean(axis=0))
            np.testing.assert_allclose(chunks[index]["embedding"], expected, atol=2e-5)
    assert body["usage"]["prompt_tokens"] == used


def whole_specials(nomic: Nomic) -> tuple[int, int]:
    ids = nomic.tokenizer.encode("hello").ids
    return ids[0], ids[-1]

"""Static (model2vec) models, the potion rows: tiny token tables saved by model2vec itself (a
plain one, and a vocabulary-quantized one with a row mapping and per-token weights), served as
NAME@DIR, against model2vec's StaticModel and FastEmbed 0.9.1's StaticTextEmbedding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.models.catalogue import load_catalogue
from tests import parity_models
from tests.conftest import serving
from tests.test_fastembed_parity import assert_same_vectors, cosine_rows

CATALOGUE = load_catalogue()
POTION = sorted(name for name in CATALOGUE if name.startswith("minishlab/potion-"))
DIM = 16
TEXTS = [
    "hello world",
    "The cat sat on the mat!",
    "unknown words vanish; the sun stays",
    "zzz qqq",  # unknown tokens only: a zero vector
    "sun " * 300 + "moon " * 360,  # 660 tokens: cut at 512
]


def build(directory: Path, quantized: bool) -> Path:
    """A model2vec model over the tiny BERT vocabulary, saved by model2vec (the Hub layout:
    model.safetensors, tokenizer.json, config.json); its tokenizer has BERT's template, which a
    static model must not apply."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    parity_models.save_bert_tokenizer(directory)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    rng = np.random.default_rng(7 if quantized else 3)
    vocabulary = tokenizer.get_vocab_size()
    if quantized:
        vectors = rng.normal(size=(9, DIM)).astype(np.float32)
        mapping = rng.integers(0, 9, size=vocabulary).astype(np.int64)
        weights = rng.uniform(0.2, 2.0, size=vocabulary).astype(np.float32)
        model = StaticModel(
            vectors, tokenizer, normalize=True, weights=weights, token_mapping=mapping
        )
    else:
        vectors = rng.normal(size=(vocabulary, DIM)).astype(np.float32)
        model = StaticModel(vectors, tokenizer, normalize=True)
    model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "vocabulary-quantized"])
def static_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("static"), request.param)


@pytest.fixture(scope="module")
def served(static_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Every potion row over the tiny table, with the tiny dimension (the rows' own are 256
    and 512)."""
    extra = tmp_path_factory.mktemp("static-rows") / "rows.toml"
    extra.write_text(
        "".join(
            f'[[model]]\nname = "{name}"\nkind = "dense"\ndim = {DIM}\nmax_length = 512\n'
            f'license = "mit"\noptions = {{family = "static", pooled_output = 0}}\n'
            f'[model.source]\nhf = "{name}"\nmodel_file = "model.safetensors"\n'
            for name in POTION
        )
    )
    models = [f"{name}@{static_dir}" for name in POTION]
    with serving(models=models, catalogue_files=[extra]) as client:
        yield client


def served_vectors(client: TestClient, name: str) -> np.ndarray:
    response = client.post("/embed/dense", json={"inputs": TEXTS, "model": name})
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"], dtype=np.float32)


def test_the_rows_are_fastembeds() -> None:
    from fastembed.text.static_embedding import StaticTextEmbedding

    theirs = {d.model: d for d in StaticTextEmbedding._list_supported_models()}
    assert sorted(theirs) == POTION
    for name in POTION:
        row = CATALOGUE[name]
        assert (row.dim, row.max_length, row.normalize) == (theirs[name].dim, 512, True)
        assert (row.source.hf, row.source.model_file) == (name, "model.safetensors")


@pytest.mark.parametrize("name", POTION)
def test_vectors_are_model2vecs_and_fastembeds(
    name: str, served: TestClient, static_dir: Path, tmp_path: Path
) -> None:
    from fastembed import TextEmbedding
    from model2vec import StaticModel

    ours = served_vectors(served, name)
    fastembed = TextEmbedding(
        name, specific_model_path=str(static_dir), local_files_only=True, cache_dir=str(tmp_path)
    )
    theirs = np.stack(list(fastembed.embed(TEXTS)))
    reference = StaticModel.from_pretrained(str(static_dir), force_download=False).encode(TEXTS)
    empty = np.array([text == "zzz qqq" for text in TEXTS])
    assert not ours[empty].any() and not theirs[empty].any() and not reference[empty].any()
    assert_same_vectors(ours[~empty], theirs[~empty], f"{name} against FastEmbed")
    # model2vec first cuts a text at 512 x its vocabulary's median token length in characters
    # (here about 360 tokens), then at 512 tokens; FastEmbed and the service cut at 512 tokens.
    short = ~empty & np.array([len(text) < 512 for text in TEXTS])
    assert_same_vectors(ours[short], reference[short], f"{name} against model2vec")
    assert cosine_rows(ours[-1:], reference[-1:])[0] < 0.99999


def test_tokens_are_counted_without_special_tokens_and_cut_at_512(served: TestClient) -> None:
    response = served.post("/embed/dense", json={"inputs": TEXTS[-1:], "model": POTION[0]})
    assert response.json()["usage"]["prompt_tokens"] == 512
    response = served.post("/embed/dense", json={"inputs": ["hello world"], "model": POTION[0]})
    assert response.json()["usage"]["prompt_tokens"] == 2


def test_a_table_of_another_width_is_refused(static_dir: Path) -> None:
    name = POTION[0]  # the real row: 256 dimensions, the tiny table has 16
    refused = r"embeddings of shape \(\d+, 16\), expected"
    with pytest.raises(AssertionError, match=refused), serving(models=[f"{name}@{static_dir}"]):
        pass

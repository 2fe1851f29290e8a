"""Truncation, per model: by default inputs are cut at the model's own limit (max_length);
where FastEmbed 0.9.1 cuts the same name elsewhere (fastembed_max_length: its Hub repository's
tokenizer_config.json carries `"max_length": 128`, fastembed #689), a request's
`token_limit: "fastembed"` or EMBED_FASTEMBED_LIMITS gives FastEmbed's vectors. Checked on
both sides of both limits against FastEmbed itself, run on a tiny model whose
tokenizer_config.json states each limit as FastEmbed's and the model's repositories do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.models.catalogue import load_catalogue
from tests import parity_models
from tests.conftest import serving
from tests.exporting import EXPORT_WARNINGS
from tests.test_fastembed_parity import assert_same_sparse, assert_same_vectors, cosine_rows

pytestmark = EXPORT_WARNINGS
CATALOGUE = load_catalogue()
LIMITED = sorted(name for name, spec in CATALOGUE.items() if spec.fastembed_max_length)
DENSE = [name for name in LIMITED if CATALOGUE[name].kind == "dense"]
SPLADE = [n for n in LIMITED if CATALOGUE[n].options.get("family") == "splade"]


def texts_around(*limits: int) -> list[str]:
    """Texts of limit - 1, limit and limit + 1 tokens ([CLS] and [SEP] included) for each
    limit, plus a short one: every word is one token of the tiny vocabulary."""
    words = parity_models.WORDS
    lengths = [6] + [n + d for n in limits for d in (-1, 0, 1)]
    return [" ".join(words[i % len(words)] for i in range(n - 2)) for n in lengths]


def with_limits(source: Path, directory: Path, model_max_length: int, max_length: int) -> Path:
    """A copy of a tiny model whose tokenizer_config.json holds both keys FastEmbed reads."""
    parity_models.lay_out(source, directory, ["model.onnx"])
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(model_max_length=model_max_length, max_length=max_length)
    path.write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits")
    for family in ("dense", "splade"):
        parity_models.build(root, family)
    return root


def fastembed(cls: Any, name: str, directory: Path, tmp: Path) -> Any:
    return cls(name, specific_model_path=str(directory), local_files_only=True, cache_dir=str(tmp))


def test_the_recorded_limits_are_fastembeds_caps_below_the_models_own() -> None:
    assert set(LIMITED) == {
        "sentence-transformers/all-MiniLM-L6-v2",
        "thenlper/gte-large",
        "prithivida/Splade_PP_en_v1",
        "prithvida/Splade_PP_en_v1",
        "Qdrant/bm42-all-minilm-l6-v2-attentions",
    }
    for name in LIMITED:
        spec = CATALOGUE[name]
        assert (spec.fastembed_max_length, spec.token_limit) == (128, "model")
        assert spec.limit_of(None) == spec.max_length > 128 == spec.limit_of("fastembed")


@pytest.fixture(scope="module", params=DENSE)
def dense_case(request: pytest.FixtureRequest, built: Path) -> Iterator[tuple[str, Path, Path]]:
    """A model served as NAME@DIR; FastEmbed's directories cut at its limit and the model's."""
    name = request.param
    own = CATALOGUE[name].max_length
    root = built / name.replace("/", "--")
    theirs = with_limits(built / "dense", root / "fastembed", 512, 128)  # as #689 found
    mine = with_limits(built / "dense", root / "own", own, own)
    yield name, theirs, mine


def dense(client: TestClient, name: str, texts: list[str], **extra: Any) -> dict[str, Any]:
    response = client.post("/embed/dense", json={"inputs": texts, "model": name, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_dense_default_is_the_models_limit_and_fastembeds_on_request(
    dense_case: tuple[str, Path, Path], tmp_path: Path
) -> None:
    from fastembed import TextEmbedding

    name, fastembed_dir, own_dir = dense_case
    own = CATALOGUE[name].max_length
    texts = texts_around(128, own)
    capped = np.stack(list(fastembed(TextEmbedding, name, fastembed_dir, tmp_path).embed(texts)))
    uncapped = np.stack(list(fastembed(TextEmbedding, name, own_dir, tmp_path).embed(texts)))
    longer = np.array([len(t.split()) + 2 > 128 for t in texts])
    with serving(models=[f"{name}@{fastembed_dir}"]) as client:
        default = dense(client, name, texts)
        asked = dense(client, name, texts, token_limit="fastembed")
        model = dense(client, name, texts, token_limit="model")
        described = client.get("/models").json()["models"][0]
    assert_same_vectors(np.array(default["embeddings"]), uncapped, f"{name} model's limit")
    assert_same_vectors(np.array(model["embeddings"]), uncapped, f"{name} model's limit")
    assert_same_vectors(np.array(asked["embeddings"]), capped, f"{name} FastEmbed's limit")
    # Both sides of FastEmbed's limit: the same up to 128 tokens, other vectors past it.
    assert cosine_rows(np.array(default["embeddings"]), capped)[longer].max() < 0.99999
    assert_same_vectors(np.array(default["embeddings"])[~longer], capped[~longer], name)
    lengths = [min(len(t.split()) + 2, own) for t in texts]
    assert default["usage"]["prompt_tokens"] == sum(lengths)
    assert asked["usage"]["prompt_tokens"] == sum(min(n, 128) for n in lengths)
    assert (described["max_tokens"], described["fastembed_max_tokens"]) == (own, 128)
    assert described["token_limit"] == "model"


def test_a_model_named_in_the_setting_is_cut_at_fastembeds_limit(
    dense_case: tuple[str, Path, Path], tmp_path: Path
) -> None:
    from fastembed import TextEmbedding

    name, fastembed_dir, own_dir = dense_case
    texts = texts_around(128, CATALOGUE[name].max_length)
    capped = np.stack(list(fastembed(TextEmbedding, name, fastembed_dir, tmp_path).embed(texts)))
    uncapped = np.stack(list(fastembed(TextEmbedding, name, own_dir, tmp_path).embed(texts)))
    with serving(models=[f"{name}@{fastembed_dir}"], fastembed_limits=[name]) as client:
        default = dense(client, name, texts)
        model = dense(client, name, texts, token_limit="model")
        described = client.get("/models").json()["models"][0]
    assert_same_vectors(np.array(default["embeddings"]), capped, f"{name} by the setting")
    assert_same_vectors(np.array(model["embeddings"]), uncapped, f"{name} asked model's")
    assert described["token_limit"] == "fastembed"


def test_a_model_without_a_recorded_limit_is_cut_at_its_own_either_way(built: Path) -> None:
    name = "BAAI/bge-small-en-v1.5"
    assert CATALOGUE[name].fastembed_max_length is None
    directory = parity_models.lay_out(built / "dense", built / "bge", ["model_optimized.onnx"])
    texts = texts_around(512)
    with serving(models=[f"{name}@{directory}"]) as client:
        default = dense(client, name, texts)
        asked = dense(client, name, texts, token_limit="fastembed")
    assert default == asked and default["usage"]["prompt_tokens"] == 6 + 511 + 512 * 2


def test_the_setting_must_name_served_models(built: Path) -> None:
    directory = parity_models.lay_out(built / "dense", built / "minilm", ["model.onnx"])
    name = "sentence-transformers/all-MiniLM-L6-v2"
    unknown = "EMBED_FASTEMBED_LIMITS names models that are not served"
    asked = {"models": [f"{name}@{directory}"], "fastembed_limits": ["thenlper/gte-large"]}
    with pytest.raises(AssertionError, match=unknown), serving(**asked):
        pass


def test_a_request_names_a_known_limit_only(built: Path) -> None:
    directory = parity_models.lay_out(built / "dense", built / "minilm", ["model.onnx"])
    name = "sentence-transformers/all-MiniLM-L6-v2"
    with serving(models=[f"{name}@{directory}"]) as client:
        body = {"inputs": ["hello"], "model": name, "token_limit": "tei"}
        response = client.post("/embed/dense", json=body)
    assert response.status_code == 400 and "token_limit" in response.text


@pytest.mark.parametrize("name", SPLADE)
def test_splade_default_is_the_models_limit_and_fastembeds_on_request(
    name: str, built: Path, tmp_path: Path
) -> None:
    from fastembed import SparseTextEmbedding

    own = CATALOGUE[name].max_length
    root = built / name.replace("/", "--")
    fastembed_dir = with_limits(built / "splade", root / "fastembed", 512, 128)
    own_dir = with_limits(built / "splade", root / "own", own, own)
    texts = texts_around(128, own)
    capped = list(fastembed(SparseTextEmbedding, name, fastembed_dir, tmp_path).embed(texts))
    uncapped = list(fastembed(SparseTextEmbedding, name, own_dir, tmp_path).embed(texts))
    with serving(models=[f"{name}@{fastembed_dir}"]) as client:
        answers = {}
        for limit in (None, "fastembed"):
            body = {"inputs": texts, "model": name, "token_limit": limit}
            response = client.post("/embed/sparse", json=body)
            assert response.status_code == 200, response.text
            answers[limit] = response.json()["embeddings"]
    for i, text in enumerate(texts):
        assert_same_sparse(answers[None][i], uncapped[i], f"{name} model's limit, text {i}")
        assert_same_sparse(answers["fastembed"][i], capped[i], f"{name} FastEmbed's, text {i}")
        if len(text.split()) + 2 > 128:
            assert answers[None][i] != answers["fastembed"][i]

"""Every catalogue row is well formed, and model references resolve as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.errors import ModelLoadError
from service.models.catalogue import KINDS, CatalogueError, load_catalogue, spec_from_dict
from service.models.kinds.registry import handler_for
from service.models.store import resolve_reference

CATALOGUE = load_catalogue()
# The dense text models FastEmbed lists (fastembed/text/*.py); the catalogue must know them all.
FASTEMBED_DENSE = {
    "BAAI/bge-base-en",
    "BAAI/bge-base-en-v1.5",
    "BAAI/bge-large-en-v1.5",
    "BAAI/bge-small-en",
    "BAAI/bge-small-en-v1.5",
    "BAAI/bge-small-zh-v1.5",
    "mixedbread-ai/mxbai-embed-large-v1",
    "snowflake/snowflake-arctic-embed-xs",
    "snowflake/snowflake-arctic-embed-s",
    "snowflake/snowflake-arctic-embed-m",
    "snowflake/snowflake-arctic-embed-m-long",
    "snowflake/snowflake-arctic-embed-l",
    "jinaai/jina-clip-v1",
    "sentence-transformers/all-MiniLM-L6-v2",
    "jinaai/jina-embeddings-v2-base-en",
    "jinaai/jina-embeddings-v2-small-en",
    "jinaai/jina-embeddings-v2-base-de",
    "jinaai/jina-embeddings-v2-base-code",
    "jinaai/jina-embeddings-v2-base-zh",
    "jinaai/jina-embeddings-v2-base-es",
    "thenlper/gte-base",
    "thenlper/gte-large",
    "nomic-ai/nomic-embed-text-v1.5",
    "nomic-ai/nomic-embed-text-v1.5-Q",
    "nomic-ai/nomic-embed-text-v1",
    "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
    "sentence-transformers/paraphrase-multilingual-mpnet-base-v2",
    "intfloat/multilingual-e5-large",
    "Qwen/Qwen3-Embedding-0.6B",
    "Qwen/Qwen3-Embedding-0.6B-Q",
    "jinaai/jina-embeddings-v3",
    "google/embeddinggemma-300m",
    "Qdrant/clip-ViT-B-32-text",
}


def test_every_fastembed_dense_model_is_in_the_catalogue() -> None:
    missing = FASTEMBED_DENSE - set(CATALOGUE)
    assert not missing


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_row_is_well_formed(name: str) -> None:
    spec = CATALOGUE[name]
    assert spec.kind in KINDS
    assert spec.source.hf and "/" in spec.source.hf
    if handler_for(spec).needs_session:
        assert spec.source.model_file.endswith(".onnx")
    assert spec.max_length >= 2 and spec.license
    if spec.kind == "dense":
        assert spec.dim and spec.dim > 0
        assert spec.pooling != "none" or "pooled_output" in spec.options


def test_the_default_model_is_minilm_with_mean_pooling() -> None:
    spec = CATALOGUE["sentence-transformers/all-MiniLM-L6-v2"]
    assert (spec.dim, spec.pooling, spec.normalize, spec.max_length) == (384, "mean", True, 256)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"kind": "dense"}, "no name"),
        ({"name": "x", "kind": "fancy", "source": {"hf": "a/b"}}, "kind must be"),
        (
            {"name": "x", "kind": "dense", "dim": 3, "pooling": "max", "source": {"hf": "a/b"}},
            "pooling",
        ),
        ({"name": "x", "kind": "dense", "dim": 3, "source": {"hf": "a/b"}}, "needs pooling"),
        ({"name": "x", "kind": "dense", "dim": 3, "pooling": "cls", "source": {}}, "hf or local"),
        ({"name": "x", "kind": "dense", "pooling": "cls", "source": {"hf": "a/b"}}, "dim"),
        (
            {
                "name": "x",
                "kind": "dense",
                "dim": 3,
                "pooling": "cls",
                "colour": 1,
                "source": {"hf": "a/b"},
            },
            "unknown fields",
        ),
    ],
)
def test_malformed_rows_are_refused_with_a_reason(row: dict, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        spec_from_dict(row)


def test_references_resolve_to_catalogue_local_and_named_local(tmp_path: Path) -> None:
    hub = resolve_reference("BAAI/bge-small-en-v1.5", CATALOGUE)
    assert hub.source.hf == "qdrant/bge-small-en-v1.5-onnx-q" and hub.source.local is None
    named = resolve_reference(f"sentence-transformers/all-MiniLM-L6-v2@{tmp_path}", CATALOGUE)
    assert named.source.local == tmp_path and named.pooling == "mean"
    spec = {"name": "me/mine", "kind": "dense", "dim": 4, "pooling": "cls", "max_length": 32}
    (tmp_path / "service_model.json").write_text(json.dumps({"spec": spec, "model_file": "g.onnx"}))
    local = resolve_reference(str(tmp_path), CATALOGUE)
    assert (local.name, local.source.local, local.source.model_file) == (
        "me/mine",
        tmp_path,
        "g.onnx",
    )
    with pytest.raises(ModelLoadError, match="unknown model"):
        resolve_reference("nobody/nothing", CATALOGUE)
    with pytest.raises(ModelLoadError, match="not in the catalogue"):
        resolve_reference(f"nobody/nothing@{tmp_path}", CATALOGUE)


def test_an_extra_catalogue_file_adds_models(tmp_path: Path) -> None:
    extra = tmp_path / "mine.toml"
    extra.write_text(
        '[[model]]\nname = "me/custom"\nkind = "dense"\ndim = 768\npooling = "cls"\n'
        'license = "mit"\n[model.source]\nhf = "me/custom-onnx"\nmodel_file = "onnx/model.onnx"\n'
    )
    catalogue = load_catalogue([extra])
    assert catalogue["me/custom"].source.model_file == "onnx/model.onnx"
    assert len(catalogue) == len(CATALOGUE) + 1

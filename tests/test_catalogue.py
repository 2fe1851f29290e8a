"""Every catalogue row is well formed, and model references resolve as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.errors import InvalidInput, ModelLoadError
from service.models.catalogue import (
    KINDS,
    CatalogueError,
    find_row,
    load_catalogue,
    spec_from_dict,
)
from service.models.kinds.registry import handler_for
from service.models.loaded import LoadedModel
from service.models.registry import ModelRegistry
from service.models.store import resolve_reference

CATALOGUE = load_catalogue()

# FastEmbed's names that have no catalogue row yet, by kind: the work of issue 29 still to do.
# The test below checks this is exactly the missing set, so it fails both when a FastEmbed
# release adds a model and when a row is added without its name leaving this list.
NOT_YET_SERVED: set[tuple[str, str]] = set()  # every name is served


def fastembed_names() -> set[tuple[str, str]]:
    """(kind, name) of every model FastEmbed's six classes list, read at test time."""
    import fastembed
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    classes = {
        "dense": fastembed.TextEmbedding,
        "sparse": fastembed.SparseTextEmbedding,
        "late": fastembed.LateInteractionTextEmbedding,
        "image": fastembed.ImageEmbedding,
        "multimodal": fastembed.LateInteractionMultimodalEmbedding,
        "rerank": TextCrossEncoder,
    }
    return {
        (kind, row["model"]) for kind, cls in classes.items() for row in cls.list_supported_models()
    }


FASTEMBED = fastembed_names()


def test_fastembed_lists_the_models_this_test_was_written_for() -> None:
    assert len(FASTEMBED) >= 70
    assert {kind for kind, _ in FASTEMBED} == set(KINDS) - {"m3"}  # BGE-M3 is not FastEmbed's


def test_every_fastembed_name_has_a_row_of_its_kind_but_the_listed_gap() -> None:
    missing = {
        (kind, name) for kind, name in FASTEMBED if find_row(CATALOGUE, name, [kind]) is None
    }
    assert missing - NOT_YET_SERVED == set(), "FastEmbed lists models the catalogue lacks"
    assert NOT_YET_SERVED - missing == set(), "served now: remove them from NOT_YET_SERVED"


def test_fastembeds_image_name_for_jina_clip_is_an_alias_of_the_image_row() -> None:
    assert CATALOGUE["jinaai/jina-clip-v1"].kind == "dense"
    row = find_row(CATALOGUE, "jinaai/jina-clip-v1", ["image"])
    assert row is not None and row.name == "jinaai/jina-clip-v1-vision"
    assert find_row(CATALOGUE, "jinaai/jina-clip-v1", ["dense"]) is CATALOGUE["jinaai/jina-clip-v1"]
    assert find_row(CATALOGUE, "jinaai/jina-clip-v1", ["rerank"]) is None


def test_a_request_by_an_alias_reaches_the_served_model_of_the_routes_kind() -> None:
    registry = ModelRegistry()
    for name in ("jinaai/jina-clip-v1", "jinaai/jina-clip-v1-vision"):
        spec = CATALOGUE[name]
        registry.add(LoadedModel(spec=spec, directory=Path(), handler=handler_for(spec)))
    assert registry.get("jinaai/jina-clip-v1", ("image",)).name == "jinaai/jina-clip-v1-vision"
    assert registry.get("jinaai/jina-clip-v1", ("dense",)).name == "jinaai/jina-clip-v1"
    assert registry.get("jinaai/jina-clip-v1-vision", ("image",)).spec.kind == "image"
    with pytest.raises(InvalidInput, match="is a dense model"):
        registry.get("jinaai/jina-clip-v1", ("rerank",))


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
        (
            {"name": "x", "kind": "rerank", "aliases": "y", "source": {"hf": "a/b"}},
            "aliases",
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

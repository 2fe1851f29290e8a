"""Fetching models through huggingface_hub, against a stand-in Hub on loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.engine.loading import hub_options, load_model
from service.errors import ModelLoadError
from service.models.catalogue import Source, spec_from_dict
from service.models.kinds.dense import prepare_texts
from service.models.store import HubOptions, model_directory, resolve_reference
from service.settings import Settings
from tests import tiny_models
from tests.conftest import free_port
from tests.fake_hub import HubState, fake_hub
from tests.prod_server import live_server

REPO = "test-org/tiny-dense"


def hub_spec(model_file: str = "model.onnx") -> object:
    return spec_from_dict(
        {
            "name": "test-org/tiny",
            "kind": "dense",
            "dim": tiny_models.DIM,
            "pooling": "mean",
            "max_length": 16,
            "source": {"hf": REPO, "model_file": model_file},
        }
    )


@pytest.fixture
def state(tiny_dense: tuple[Path, np.ndarray]) -> HubState:
    hub = HubState()
    hub.add_directory(REPO, tiny_dense[0])
    return hub


def snapshot_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("snapshots/*/*"))


def test_downloads_required_and_optional_files_into_the_cache(
    state: HubState, tmp_path: Path
) -> None:
    with fake_hub(state) as url:
        directory = model_directory(
            hub_spec(), HubOptions(cache_dir=tmp_path, endpoint=url, token="hf_secret")
        )
    assert (directory / "model.onnx").read_bytes() == state.repos[REPO]["model.onnx"]
    assert (directory / "tokenizer.json").is_file() and (directory / "config.json").is_file()
    assert not (directory / "preprocessor_config.json").exists()  # optional, absent on the Hub
    assert all(auth == "Bearer hf_secret" for _, _, auth in state.requests)


def test_offline_mode_serves_from_the_cache_without_the_hub(
    state: HubState, tmp_path: Path
) -> None:
    with fake_hub(state) as url:
        first = model_directory(hub_spec(), HubOptions(cache_dir=tmp_path, endpoint=url))
    seen = len(state.requests)
    again = model_directory(
        hub_spec(), HubOptions(cache_dir=tmp_path, offline=True, endpoint="http://127.0.0.1:9")
    )
    assert again == first and len(state.requests) == seen


def test_a_missing_file_is_a_clear_error(state: HubState, tmp_path: Path) -> None:
    with fake_hub(state) as url, pytest.raises(ModelLoadError) as error:
        model_directory(hub_spec("onnx/missing.onnx"), HubOptions(cache_dir=tmp_path, endpoint=url))
    assert "onnx/missing.onnx" in str(error.value) and "not found" in str(error.value)
    assert "missing.onnx" not in snapshot_files(tmp_path)


def test_a_hub_that_is_down_is_a_clear_error(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelLoadError) as error:
        model_directory(hub_spec(), HubOptions(cache_dir=tmp_path, endpoint=down))
    assert REPO in str(error.value) and "model.onnx" in str(error.value)
    assert snapshot_files(tmp_path) == []


def test_a_cut_download_leaves_no_half_written_file(state: HubState, tmp_path: Path) -> None:
    state.truncate.add("model.onnx")
    with fake_hub(state) as url, pytest.raises(ModelLoadError):
        model_directory(hub_spec(), HubOptions(cache_dir=tmp_path, endpoint=url))
    assert "model.onnx" not in snapshot_files(tmp_path)
    state.truncate.clear()  # a later start completes the download
    with fake_hub(state) as url:
        directory = model_directory(hub_spec(), HubOptions(cache_dir=tmp_path, endpoint=url))
    assert (directory / "model.onnx").read_bytes() == state.repos[REPO]["model.onnx"]


def test_local_source_needs_its_graph(tmp_path: Path) -> None:
    spec = hub_spec()
    local = spec.with_local_source(tmp_path)  # type: ignore[attr-defined]
    assert isinstance(local.source, Source)
    with pytest.raises(ModelLoadError, match="missing"):
        model_directory(local, HubOptions())


def test_a_converted_directory_may_hold_only_the_variant_it_serves(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """As a GPU image that ships only model.fp16.onnx: model.onnx itself is not needed."""
    directory = tmp_path / "only-variant"
    shutil.copytree(tiny_dense[0], directory)
    (directory / "model.onnx").rename(directory / "model.small.onnx")
    metadata = json.loads((directory / "service_model.json").read_text())
    metadata["variants"] = {"fp32": "model.onnx", "small": "model.small.onnx"}
    metadata["default_cpu"] = "small"
    metadata["checks"] = {"small": {"min_cosine": 0.99995, "mean_cosine": 0.99999, "texts": 20}}
    (directory / "service_model.json").write_text(json.dumps(metadata))
    settings = Settings(models=[str(directory)])
    model = load_model(resolve_reference(str(directory), {}), settings, hub_options(settings))
    assert model.variant == "small"
    assert model.spec.source.model_file == "model.small.onnx" and len(model.runners) == 1
    with pytest.raises(ModelLoadError, match=r"'fp32' is recorded but .*model\.onnx is missing"):
        load_model(
            resolve_reference(str(directory), {}),
            Settings(models=[str(directory)], graph_variant="fp32"),
            hub_options(settings),
        )
    # A recorded default that is not exact (dynamic int8 was, once) is not served by default:
    # auto falls back to fp32, which this directory lacks.
    metadata["checks"]["small"]["min_cosine"] = 0.9966
    (directory / "service_model.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelLoadError, match=r"'fp32' is recorded but .*model\.onnx is missing"):
        load_model(resolve_reference(str(directory), {}), settings, hub_options(settings))


@pytest.mark.slow
def test_the_service_fetches_a_catalogue_model_through_hf_endpoint(
    state: HubState, tmp_path: Path, tiny_dense: tuple[Path, np.ndarray]
) -> None:
    """End to end, as a user runs it: HF_ENDPOINT, an extra catalogue file, a cache dir."""
    catalogue = tmp_path / "extra.toml"
    catalogue.write_text(
        '[[model]]\nname = "test-org/tiny"\nkind = "dense"\ndim = 8\npooling = "mean"\n'
        f'max_length = 16\n[model.source]\nhf = "{REPO}"\n'
    )
    with fake_hub(state) as hub_url:
        env = {
            "HF_ENDPOINT": hub_url,
            "EMBED_CATALOGUE_FILES": str(catalogue),
            "EMBED_MODELS": "test-org/tiny",
            "EMBED_CACHE_DIR": str(tmp_path / "cache"),
        }
        with live_server(env) as url:
            import httpx

            body = httpx.post(f"{url}/embed/dense", json={"inputs": ["hello world"]}).json()
    expected = tiny_models.expected_dense(tiny_dense[1], "hello world")
    np.testing.assert_allclose(body["embeddings"][0], expected, atol=1e-6)


EXTERNAL_REPO = "test-org/tiny-external"


def external_data_repo(tiny_dense: tuple[Path, np.ndarray], out: Path) -> Path:
    """The tiny model laid out as the Hub's large models are: onnx/model.onnx with its weights
    in onnx/model.onnx_data beside it (ONNX external data, as jina v3, e5-large, Qwen3,
    ColPali and bge-reranker-v2-m3 ship)."""
    import onnx

    shutil.copytree(tiny_dense[0], out)
    (out / "service_model.json").unlink()  # a Hub repository has none
    graph = onnx.load(str(out / "model.onnx"))
    (out / "model.onnx").unlink()
    (out / "onnx").mkdir()
    onnx.save_model(
        graph,
        str(out / "onnx" / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx_data",
        size_threshold=256,  # the weights; small constants stay inline, as exporters keep them
    )
    return out


def test_external_data_loads_from_a_cold_hub_cache(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """Fetched by huggingface_hub into its real layout (blobs, and snapshots of symlinks to
    them) from an empty cache, then loaded by the installed onnxruntime. onnxruntime 1.24 to
    1.2x refuse external data whose resolved path leaves the graph's directory (measured with
    1.24.1 on this layout: "escapes model directory"; fastembed #603), so the model is served
    from hard links in one directory (service/models/store.py: linked_snapshot)."""
    source = external_data_repo(tiny_dense, tmp_path / "repo")
    state = HubState()
    state.add_directory(EXTERNAL_REPO, source)
    spec = spec_from_dict(
        {
            "name": "test-org/tiny-external",
            "kind": "dense",
            "dim": tiny_models.DIM,
            "pooling": "mean",
            "max_length": 16,
            "source": {
                "hf": EXTERNAL_REPO,
                "model_file": "onnx/model.onnx",
                "additional_files": ["onnx/model.onnx_data"],
            },
        }
    )
    cache = tmp_path / "cache"
    settings = Settings(models=[spec.name], cache_dir=cache)
    with fake_hub(state) as url:
        hub = HubOptions(cache_dir=cache, endpoint=url)
        model = load_model(spec, settings, hub)
    # The snapshot holds symlinks into blobs/; the model is served from hard links to the same
    # blobs in one real directory, where the data resolves inside the graph's folder.
    snapshot = next(cache.glob("models--test-org--tiny-external/snapshots/*"))
    assert (snapshot / "onnx" / "model.onnx_data").is_symlink()
    assert (snapshot / "onnx" / "model.onnx_data").resolve().parent.name == "blobs"
    graph = model.directory / "onnx" / "model.onnx"
    data = graph.parent / "model.onnx_data"
    assert not graph.is_symlink() and not data.is_symlink()
    assert data.resolve().parent == graph.resolve().parent == model.directory / "onnx"
    assert data.stat().st_ino == (snapshot / "onnx" / "model.onnx_data").resolve().stat().st_ino
    assert (model.directory / "tokenizer.json").is_file()
    prepared = prepare_texts(model, ["hello world", "the cat sat"], None, truncate=True)
    vectors = model.process(0, [payload for _, payload in prepared])
    for vector, text in zip(vectors, ["hello world", "the cat sat"], strict=True):
        expected = tiny_models.expected_dense(tiny_dense[1], text)
        np.testing.assert_allclose(vector / np.linalg.norm(vector), expected, atol=1e-6)

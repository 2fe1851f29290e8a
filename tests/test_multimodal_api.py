"""/embed/multimodal with a tiny random ColPali exported by the conversion command: the prompt
token layout, multi-vectors against PyTorch (pages and queries, in mixed batches), MaxSim."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests import colpali_models as cp
from tests import image_models
from tests.conftest import engine_registry, serving

MODEL = "tiny/colpali"


@pytest.fixture(scope="module")
def tiny_colpali(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    return cp.build_tiny_colpali(tmp_path_factory.mktemp("tiny-colpali"))


@pytest.fixture(scope="module")
def client(tiny_colpali: tuple[Any, Path]) -> Iterator[TestClient]:
    with serving(models=[str(tiny_colpali[1])], image_max_images=4, max_wait_ms=20) as c:
        yield c


def expected_query_ids(query: str) -> list[int]:
    words = ["Query:", *query.split()]
    return [cp.BOS, *(cp.VOCAB[w] for w in words), *[cp.PAD] * 10, cp.VOCAB["\n"]]


def expected_page_ids() -> list[int]:
    prompt = [cp.VOCAB[w] for w in ("Describe", "the", "image.")] + [cp.VOCAB["\n"]]
    return [cp.IMAGE_TOKEN_ID] * cp.IMAGE_TOKENS + [cp.BOS, *prompt]


def test_export_recorded_the_prompt_layout_and_its_error(tiny_colpali) -> None:
    metadata = json.loads((tiny_colpali[1] / "service_model.json").read_text())
    assert metadata["spec"]["kind"] == "multimodal" and metadata["spec"]["dim"] == 16
    assert metadata["spec"]["query_prefix"] == "Query: "
    assert metadata["spec"]["options"] == {
        "image_token_id": cp.IMAGE_TOKEN_ID,
        "image_tokens": cp.IMAGE_TOKENS,
        "bos_token_id": cp.BOS,
        "image_prompt": "Describe the image.\n",
        "query_suffix": "<pad>" * 10 + "\n",
    }
    assert metadata["export"]["max_abs_error_vs_torch"] < 1e-5


def test_prompt_token_layout_is_exact(client: TestClient) -> None:
    from service.models.kinds.multimodal import image_ids, query_ids

    model = engine_registry(client.app).get(MODEL, ("multimodal",))  # type: ignore[attr-defined]
    assert query_ids(model, "red cat").tolist() == expected_query_ids("red cat")
    assert image_ids(model).tolist() == expected_page_ids()


def torch_embeddings(model: Any, ids: list[int], pixels: np.ndarray | None) -> np.ndarray:
    import torch

    inputs: dict[str, Any] = {"input_ids": torch.tensor([ids])}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if pixels is not None:
        inputs["pixel_values"] = torch.from_numpy(pixels[None])
    with torch.no_grad():
        return model(**inputs).embeddings[0].numpy()


def page_pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    pixels: np.ndarray = cp.preprocessor()(image, return_tensors="np")["pixel_values"][0]
    return pixels


def test_pages_and_queries_match_pytorch_with_maxsim(client: TestClient, tiny_colpali) -> None:
    reference = tiny_colpali[0]
    samples = image_models.sample_images()
    pages = [samples["rgb_37x53"], samples["cmyk_jpeg_50x41"], samples["webp_64x99"]]
    queries = ["red cat", "a chart of sales", "page"]
    body = {"queries": queries, "images": [base64.b64encode(p).decode() for p in pages]}
    response = client.post("/embed/multimodal", json=body)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["model"] == MODEL and got["dim"] == 16
    expected_q = [torch_embeddings(reference, expected_query_ids(q), None) for q in queries]
    expected_p = [torch_embeddings(reference, expected_page_ids(), page_pixels(p)) for p in pages]
    for item, theirs in zip(
        [*got["queries"], *got["images"]], [*expected_q, *expected_p], strict=True
    ):
        ours_array = np.array(item["embedding"], dtype=np.float32)
        assert item["shape"] == list(theirs.shape) and item["tokens"] == len(theirs)
        assert ours_array.shape == theirs.shape
        cosine = (ours_array * theirs).sum(-1) / (
            np.linalg.norm(ours_array, axis=-1) * np.linalg.norm(theirs, axis=-1)
        )
        assert cosine.min() >= 0.9999
        np.testing.assert_allclose(ours_array, theirs, atol=1e-5)
    scores = [[float((q @ p.T).max(axis=1).sum()) for p in expected_p] for q in expected_q]
    np.testing.assert_allclose(got["scores"], scores, atol=1e-4)
    assert got["usage"] == {"images": 3, "query_tokens": sum(len(q) for q in expected_q)}


def test_multipart_pages_and_query_fields(client: TestClient, tiny_colpali) -> None:
    page = image_models.sample_images()["rgba_61x29"]
    response = client.post(
        "/embed/multimodal",
        files=[("images", ("p.png", page, "image/png"))],
        data={"queries": ["red cat", "page"], "model": MODEL},
    )
    assert response.status_code == 200, response.text
    got = response.json()
    expected = torch_embeddings(tiny_colpali[0], expected_page_ids(), page_pixels(page))
    np.testing.assert_allclose(np.array(got["images"][0]["embedding"]), expected, atol=1e-5)
    assert len(got["queries"]) == 2 and len(got["scores"]) == 2


def test_base64_matrices_as_embed_late_gives_them(client: TestClient) -> None:
    page = base64.b64encode(image_models.sample_images()["tiny_1x1"]).decode()
    body = {"queries": ["red cat"], "images": [page]}
    plain = client.post("/embed/multimodal", json=body).json()
    packed = client.post("/embed/multimodal", json=body | {"encoding_format": "base64"}).json()
    for key in ("queries", "images"):
        item = packed[key][0]
        matrix = np.frombuffer(base64.b64decode(item["embedding"]), "<f4").reshape(item["shape"])
        np.testing.assert_allclose(matrix, np.array(plain[key][0]["embedding"]), atol=1e-7)
        assert item["index"] == 0 and item["tokens"] == item["shape"][0]
    assert packed["scores"] == plain["scores"]


def test_bad_multimodal_input(client: TestClient) -> None:
    response = client.post("/embed/multimodal", json={})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "send queries, images, or both"
    response = client.post("/embed/multimodal", json={"queries": [""]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "query 0 is an empty string"
    response = client.post("/embed/multimodal", json={"images": ["aGVsbG8="]})  # "hello"
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("image 0 is not an image")
    response = client.post("/embed/multimodal", content=b"x", headers={"content-type": "text/csv"})
    assert response.status_code == 415
    response = client.post("/embed/multimodal", json={"queries": ["red", "a <image> cat"]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "query 1 contains the model's image token"
    response = client.post("/embed/multimodal", json={"queries": ["cat " * 60]})
    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "query 0 has 73 tokens with its prompt; the limit is 64"
    )


def test_a_batch_with_queries_before_pages_is_reordered(client: TestClient, tiny_colpali) -> None:
    """The graph splices image features in batch order: a query placed first must not take a
    page's features. One batch, run directly on the model: [query, page, query, page]."""
    from service.models.kinds.multimodal import prepare_pages, prepare_queries

    model = engine_registry(client.app).get(MODEL, ("multimodal",))  # type: ignore[attr-defined]
    samples = image_models.sample_images()
    pages = [samples["rgb_37x53"], samples["grey_7x301"]]
    queries = prepare_queries(model, ["red cat", "a page"])
    page_items = prepare_pages(model, pages, 10_000_000)
    batch = [queries[0][1], page_items[0][1], queries[1][1], page_items[1][1]]
    results = model.process(0, batch)
    reference = tiny_colpali[0]
    expected = [
        torch_embeddings(reference, expected_query_ids("red cat"), None),
        torch_embeddings(reference, expected_page_ids(), page_pixels(pages[0])),
        torch_embeddings(reference, expected_query_ids("a page"), None),
        torch_embeddings(reference, expected_page_ids(), page_pixels(pages[1])),
    ]
    for ours, theirs in zip(results, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_catalogue_rows_carry_fastembeds_prompt_layout() -> None:
    from service.models.catalogue import load_catalogue

    rows = {n: s for n, s in load_catalogue().items() if s.kind == "multimodal"}
    colmodernvbert = rows.pop("Qdrant/colmodernvbert")  # tests/test_colmodernvbert.py
    assert colmodernvbert.options["family"] == "colmodernvbert"
    assert sorted(rows) == ["Qdrant/colpali-v1.3-fp16", "vidore/colpali-v1.2"]
    for spec in rows.values():
        assert spec.dim == 128 and spec.query_prefix == "Query: "
        # FastEmbed's page prompt: '<image>' * 1024 + '<bos>Describe the image.\n'
        assert spec.options["image_token_id"] == 257152 and spec.options["image_tokens"] == 1024
        assert spec.options["bos_token_id"] == 2
        assert spec.options["image_prompt"] == "Describe the image.\n"
        assert spec.options["query_suffix"] == "<pad>" * 10 + "\n"


def test_compressed_pages_and_queries(client: TestClient) -> None:
    """compress: pooled pages, MUVERA (FastEmbed's Muvera: pages as documents, queries as
    queries) and sign bits, of the raw multi-vectors; scores stay MaxSim over the raw ones."""
    from fastembed.postprocess.muvera import Muvera

    from service.models.multivector import pool_tokens

    pages = [base64.b64encode(image_models.sample_images()[n]).decode() for n in ("rgb_37x53",)]
    body = {"queries": ["red cat", "page"], "images": pages}
    raw = client.post("/embed/multimodal", json=body).json()
    matrices = {
        k: [np.asarray(i["embedding"], np.float32) for i in raw[k]] for k in ("queries", "images")
    }
    pooled = client.post("/embed/multimodal", json=body | {"compress": {"pool_factor": 4}}).json()
    assert pooled["scores"] == raw["scores"]
    np.testing.assert_allclose(
        pooled["images"][0]["embedding"], pool_tokens(matrices["images"][0], 4), atol=1e-6
    )
    options = {"k_sim": 3, "dim_proj": 8, "r_reps": 4, "seed": 5}
    muvera = client.post("/embed/multimodal", json=body | {"compress": {"muvera": options}}).json()
    reference = Muvera(16, 3, 8, 4, 5)
    np.testing.assert_allclose(
        muvera["images"][0]["embedding"],
        reference.process_document(matrices["images"][0]),
        atol=1e-5,
    )
    for item, matrix in zip(muvera["queries"], matrices["queries"], strict=True):
        np.testing.assert_allclose(item["embedding"], reference.process_query(matrix), atol=1e-5)
    assert [item["index"] for item in muvera["images"]] == [0]
    form = client.post(
        "/embed/multimodal",
        files=[("images", ("p.png", image_models.sample_images()["rgb_37x53"], "image/png"))],
        data={"queries": ["red cat"], "compress": '{"binary": true}'},
    ).json()
    expected = np.packbits(matrices["images"][0] > 0, axis=-1).tolist()
    assert form["images"][0]["type"] == "ubinary" and form["images"][0]["embedding"] == expected
    bad = client.post(
        "/embed/multimodal",
        files=[("images", ("p.png", image_models.sample_images()["rgb_37x53"], "image/png"))],
        data={"compress": '{"pool_factor": 0}'},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "compress"

"""Qdrant/colmodernvbert on /embed/multimodal against FastEmbed 0.9.1 as the oracle: a tiny
graph with model_v2.onnx's inputs and output (tests/colmodernvbert_models.py), laid out as
FastEmbed loads a local model, run through FastEmbed's LateInteractionMultimodalEmbedding
in this process and through the service as NAME@DIR. Three preprocessor variants (the real
resize-then-split, split without resizing, no splitting) give grids from (0, 0) to 1 x 19;
pages of many sizes and modes, queries of several lengths, alone and in mixed batches."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.models.catalogue import load_catalogue
from service.models.kinds import colmodernvbert
from service.models.kinds.multimodal import maxsim
from service.models.tiling import split_image, tiling_config_from_dict
from tests import colmodernvbert_models as cm
from tests import image_models
from tests.conftest import engine_registry, serving

NAME = "Qdrant/colmodernvbert"
pytestmark = pytest.mark.filterwarnings(f"ignore:The model '{NAME}' has been updated")
QUERIES = ["cat", "a red cat on a chart", "what were the sales of the third quarter in 2024?"]
# FastEmbed drops an alpha channel (Image.convert("RGB")); the service composites it onto white,
# as transformers' Idefics3 processor does (tests/test_fastembed_parity.py says the same).
TRANSPARENT = ("rgba_61x29", "grey_alpha_33x33", "palette_transparent")


def samples() -> dict[str, bytes]:
    images = image_models.sample_images()
    images["wide_16x64"] = image_models.encoded(Image.new("RGB", (64, 16), (20, 90, 200)))
    return images


def without_alpha(data: bytes) -> bytes:
    return image_models.encoded(Image.open(io.BytesIO(data)).convert("RGB"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cosine_rows(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    dot = (ours * theirs).sum(axis=-1)
    return np.asarray(dot / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1)))


def assert_same(ours: Any, theirs: np.ndarray, what: str) -> None:
    ours = np.asarray(ours, dtype=np.float32)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} against {theirs.shape}"
    assert cosine_rows(ours, theirs).min() >= 0.99999, what
    np.testing.assert_allclose(
        np.linalg.norm(ours, axis=-1), np.linalg.norm(theirs, axis=-1), rtol=1e-4, err_msg=what
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("colmodernvbert")
    return {variant: cm.build(root / variant, variant) for variant in cm.VARIANTS}


def reference(directory: Path, cache: Path) -> Any:
    from fastembed import LateInteractionMultimodalEmbedding

    return LateInteractionMultimodalEmbedding(
        NAME,
        specific_model_path=str(directory),
        local_files_only=True,
        cache_dir=str(cache),
        threads=1,
    )


@pytest.fixture(scope="module")
def resized(built: dict[str, Path]) -> Iterator[TestClient]:
    with serving(models=[f"{NAME}@{built['resized']}"], max_wait_ms=20) as client:
        yield client


def embed(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/embed/multimodal", json={"model": NAME, **body})
    assert response.status_code == 200, response.text
    got: dict[str, Any] = response.json()
    return got


def test_the_row_is_fastembeds() -> None:
    from fastembed.late_interaction_multimodal.colmodernvbert import ColModernVBERT

    (description,) = ColModernVBERT._list_supported_models()
    row = load_catalogue()[NAME]
    assert (row.kind, row.dim, row.source.hf) == ("multimodal", description.dim, NAME)
    assert row.source.model_file == description.model_file == "model_v2.onnx"
    assert list(row.source.additional_files) == description.additional_files
    assert row.options["image_prompt"] == ColModernVBERT.VISUAL_PROMPT_PREFIX
    assert row.options["query_suffix"] == ColModernVBERT.QUERY_AUGMENTATION_TOKEN * 10


@pytest.mark.parametrize("variant", sorted(cm.VARIANTS))
def test_tiles_and_grids_are_fastembeds(variant: str) -> None:
    """The service's tiles are FastEmbed's, value for value, and so is the grid."""
    from fastembed.image.transform.operators import Compose

    raw = cm.PREPROCESSOR | cm.VARIANTS[variant]
    theirs, ours = Compose.from_config(raw), tiling_config_from_dict(raw)
    for label, data in samples().items():
        image = Image.open(io.BytesIO(data))
        rgb = image.convert("RGB")
        metadata: dict[str, Any] = {}
        processed: Any = theirs([rgb], metadata=metadata)
        expected = np.stack(processed[0])
        tiles = split_image(rgb, ours)
        assert (tiles.rows, tiles.cols) == metadata["image_grid"][0], label
        np.testing.assert_array_equal(tiles.pixels, expected, err_msg=label)


def fastembed_grids(variant: str, images: dict[str, bytes]) -> set[tuple[int, int]]:
    from fastembed.image.transform.operators import Compose

    processor = Compose.from_config(cm.PREPROCESSOR | cm.VARIANTS[variant])
    grids = set()
    for data in images.values():
        metadata: dict[str, Any] = {}
        processor([Image.open(io.BytesIO(data)).convert("RGB")], metadata=metadata)
        grids.add(tuple(metadata["image_grid"][0]))
    return grids


# The grids each variant must reach with samples(), so the parity below cannot lose them.
GRIDS = {
    "resized": {(1, 3), (2, 3), (3, 2), (3, 3)},
    "unresized": {(0, 0), (2, 2), (3, 3), (1, 19)},
    "unsplit": {(0, 0)},
}


@pytest.mark.parametrize("variant", sorted(cm.VARIANTS))
def test_page_vectors_are_fastembeds(
    variant: str, built: dict[str, Path], resized: TestClient, tmp_path: Path
) -> None:
    """Every sample page, all in one request (mixed sizes in one batch) and each alone, gives
    FastEmbed's vectors (FastEmbed batches them by three); a transparent page gives them once
    its alpha is dropped."""
    images = samples()
    if variant == "unresized":  # 30 x 40 tiles: more tokens than the limit (tested below)
        del images["large_jpeg_480x640"]
    assert GRIDS[variant] <= fastembed_grids(variant, images)
    paths = []
    for i, data in enumerate(images.values()):
        paths.append(str(tmp_path / f"{i}.img"))
        Path(paths[-1]).write_bytes(data)
    theirs = list(reference(built[variant], tmp_path / "cache").embed_image(paths, batch_size=3))
    sent = [without_alpha(d) if k in TRANSPARENT else d for k, d in images.items()]
    if variant == "resized":
        client = resized
        together = embed(client, images=[b64(d) for d in sent])["images"]
        alone = [embed(client, images=[b64(d)])["images"][0] for d in sent]
        as_sent = embed(client, images=[b64(d) for d in images.values()])["images"]
        for label, ours, expected in zip(images, as_sent, theirs, strict=True):
            if label not in TRANSPARENT:
                assert_same(ours["embedding"], expected, f"{label} as sent")
            else:
                assert cosine_rows(np.array(ours["embedding"]), expected).min() < 0.99999
    else:
        with serving(models=[f"{NAME}@{built[variant]}"]) as client:
            together = embed(client, images=[b64(d) for d in sent])["images"]
            alone = [embed(client, images=[b64(d)])["images"][0] for d in sent]
    for label, ours, one, expected in zip(images, together, alone, theirs, strict=True):
        assert_same(ours["embedding"], expected, f"{variant} {label} in a batch")
        assert_same(one["embedding"], expected, f"{variant} {label} alone")


def test_query_vectors_are_fastembeds(
    built: dict[str, Path], resized: TestClient, tmp_path: Path
) -> None:
    theirs = list(reference(built["resized"], tmp_path).embed_text(QUERIES, batch_size=2))
    together = embed(resized, queries=QUERIES)["queries"]
    for query, ours, expected in zip(QUERIES, together, theirs, strict=True):
        assert_same(ours["embedding"], expected, query)
        assert_same(embed(resized, queries=[query])["queries"][0]["embedding"], expected, query)
    lengths = [len(v) for v in theirs]
    assert len(set(lengths)) == len(QUERIES) and min(lengths) > 10  # ten augmentation tokens


def test_queries_and_pages_in_one_request_with_maxsim(
    built: dict[str, Path], resized: TestClient, tmp_path: Path
) -> None:
    images = samples()
    pages = [images["rgb_37x53"], images["tiny_1x1"], images["webp_64x99"]]
    paths = []
    for i, data in enumerate(pages):
        paths.append(str(tmp_path / f"{i}.img"))
        Path(paths[-1]).write_bytes(data)
    model = reference(built["resized"], tmp_path / "cache")
    expected_pages = list(model.embed_image(paths, batch_size=2))
    expected_queries = list(model.embed_text(QUERIES))
    got = embed(resized, queries=QUERIES, images=[b64(p) for p in pages])
    for ours, theirs in zip(got["images"], expected_pages, strict=True):
        assert_same(ours["embedding"], theirs, "page beside queries")
    for ours, theirs in zip(got["queries"], expected_queries, strict=True):
        assert_same(ours["embedding"], theirs, "query beside pages")
    np.testing.assert_allclose(got["scores"], maxsim(expected_queries, expected_pages), rtol=1e-4)
    assert got["usage"] == {"images": 3, "query_tokens": sum(len(q) for q in expected_queries)}


def test_one_batch_of_interleaved_queries_and_pages_of_different_grids(
    resized: TestClient,
) -> None:
    """The graph splices tile features in batch order: run one batch directly, queries between
    pages of different grids, and each input must get the vectors it gets alone."""
    model = engine_registry(resized.app).get(NAME, ("multimodal",))
    images = samples()
    pages = colmodernvbert.prepare_pages(
        model, [images["grey_7x301"], images["webp_64x99"], images["rgb_37x53"]], 10**7
    )
    queries = colmodernvbert.prepare_queries(model, QUERIES[:2])
    batch = [queries[0][1], pages[0][1], pages[1][1], queries[1][1], pages[2][1]]
    together = model.process(0, batch)
    for item, ours in zip(batch, together, strict=True):
        (alone,) = model.process(0, [item])
        assert_same(ours, alone, "in a batch against alone")
    assert {len(item.tiles) for item in batch if item.tiles is not None} == {4, 7, 10}
    # a page costs the batcher its tokens and its tiles' vision patches (16 a tile here)
    patches = (cm.TILE // cm.PATCH) ** 2
    assert [cost for cost, _ in pages] == [
        len(i.ids) + patches * n
        for i, n in zip([item for _, item in pages], (4, 7, 10), strict=True)
    ]
    assert [cost for cost, _ in queries] == [len(item.ids) for _, item in queries]


def test_page_prompt_layout(resized: TestClient) -> None:
    """Per tile of the grid, row by row: <fake_token_around_image>, its row/col marker and its
    image tokens; then the global view between two <fake_token_around_image>."""
    model = engine_registry(resized.app).get(NAME, ("multimodal",))
    tokenizer = colmodernvbert.prompting(model).tokenizer
    ids = colmodernvbert.page_ids(model, 2, 3).tolist()
    image = tokenizer.token_to_id("<image>")
    around = tokenizer.token_to_id("<fake_token_around_image>")
    assert ids.count(image) == (2 * 3 + 1) * cm.IMAGE_SEQ_LEN
    tokens = [str(tokenizer.id_to_token(i)) for i in ids]
    markers = [token for token in tokens if token.startswith("<row")]
    assert markers == [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2, 3)]
    assert ids.count(around) == 2 * 3 + 2
    glob = ids.index(tokenizer.token_to_id("<global-img>"))
    assert ids[glob - 1] == around and ids[glob + 1 : glob + 1 + cm.IMAGE_SEQ_LEN] == [image] * 4
    assert ids[glob + 1 + cm.IMAGE_SEQ_LEN] == around
    assert (ids[0], ids[-1]) == (tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"))
    single = colmodernvbert.page_ids(model, 0, 0).tolist()
    assert single.count(image) == cm.IMAGE_SEQ_LEN and single.count(around) == 2


def test_bad_input_gets_a_clear_4xx(built: dict[str, Path], resized: TestClient) -> None:
    response = resized.post("/embed/multimodal", json={"images": [b64(b"hello")], "model": NAME})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("image 0 is not an image")
    body = {"queries": ["red", "a <image> cat"], "model": NAME}
    response = resized.post("/embed/multimodal", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "query 1 contains the model's image token"
    big = image_models.encoded(Image.new("RGB", (1000, 800)))
    with serving(models=[f"{NAME}@{built['unresized']}"], image_max_pixels=700_000) as client:
        response = client.post("/embed/multimodal", json={"images": [b64(big)]})
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "image_too_large"
        # under the pixel limit, but its 38 x 63 tiles make more tokens than the model's limit
        wide = image_models.encoded(Image.new("RGB", (1000, 600), (9, 9, 9)))
        response = client.post("/embed/multimodal", json={"images": [b64(wide)]})
        assert response.status_code == 413, response.text
        message = response.json()["error"]["message"]
        assert message.startswith("image 0 makes 2395 tiles"), message


def test_the_batch_layout_holds_for_transformers_colmodernvbert(resized: TestClient) -> None:
    """The assumption behind collate, on the real architecture (a tiny random
    ColModernVBertForRetrieval in PyTorch): one batch as the service sends it (queries between
    pages, every page's tiles in one (1, tiles) row, rows padded on the right) gives each
    input the vectors it gets as FastEmbed sends it (pages padded to (pages, most tiles) with
    blank tiles; a query alone, without pixels)."""
    import torch

    reference = cm.real_architecture()
    model = engine_registry(resized.app).get(NAME, ("multimodal",))
    images = samples()
    pages = colmodernvbert.prepare_pages(
        model, [images["grey_7x301"], images["webp_64x99"], images["rgb_37x53"]], 10**7
    )
    queries = colmodernvbert.prepare_queries(model, QUERIES[:2])
    batch = [queries[0][1], pages[0][1], pages[1][1], queries[1][1], pages[2][1]]
    feeds = colmodernvbert.collate(model, batch)
    assert feeds["pixel_values"].shape == (1, 4 + 7 + 10, 3, cm.TILE, cm.TILE)

    def run(ids: Any, mask: Any, pixels: Any = None) -> np.ndarray:
        with torch.no_grad():
            inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
            if pixels is not None:
                inputs["pixel_values"] = torch.from_numpy(pixels)
            return np.asarray(reference(**inputs).embeddings.numpy())

    ours = run(feeds["input_ids"], feeds["attention_mask"], feeds["pixel_values"])
    rows = colmodernvbert.postprocess(model, [ours], feeds, batch)
    page_items = [item for item in batch if item.tiles is not None]
    most = max(len(item.tiles) for item in page_items if item.tiles is not None)
    width = max(len(item.ids) for item in page_items)
    ids = np.full((3, width), model.encoder.pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    pixels = np.zeros((3, most, 3, cm.TILE, cm.TILE), dtype=np.float32)
    for row, item in enumerate(page_items):
        assert item.tiles is not None
        ids[row, : len(item.ids)], mask[row, : len(item.ids)] = item.ids, 1
        pixels[row, : len(item.tiles)] = item.tiles
    fastembed_pages = run(ids, mask, pixels)
    expected = {id(item): fastembed_pages[i, : len(item.ids)] for i, item in enumerate(page_items)}
    for item in batch:
        if item.tiles is None:
            alone = item.ids[None]
            expected[id(item)] = run(alone, np.ones_like(alone))[0]
    for item, got in zip(batch, rows, strict=True):
        np.testing.assert_allclose(got, expected[id(item)], atol=1e-5)

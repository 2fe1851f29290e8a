"""/embed/image with a tiny random CLIPModel exported by the conversion command, compared with
PyTorch's image and text features; and every kind of bad input, each with its status."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.front.http.guard import read_body, too_large
from tests import image_models
from tests.conftest import serving
from tests.envelope import error_of
from tests.prod_server import running

VISION = "tiny/clip-vision"
NOT_AN_IMAGE = (
    "image 0 is not an image the service can read (unknown format, or a header that declares "
    "no pixels)"
)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path]:
    return image_models.build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def clip_client(tiny_clip: tuple[Any, Path, Path]) -> Iterator[TestClient]:
    _, vision, text = tiny_clip
    with serving(
        models=[str(vision), str(text)],
        image_max_images=4,
        image_max_bytes=300_000,
        image_max_request_bytes=1_000_000,
        image_max_pixels=400_000,
    ) as client:
        yield client


def torch_image_features(model: Any, images: list[bytes]) -> np.ndarray:
    import torch

    processor = image_models.reference_processor()
    pixels = processor([Image.open(io.BytesIO(d)) for d in images], return_tensors="pt")
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output
    return features.numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def files(images: list[bytes], content_type: str = "image/png") -> list[tuple[str, Any]]:
    return [("images", (f"{i}.png", data, content_type)) for i, data in enumerate(images)]


def test_multipart_upload_matches_pytorch_image_features(
    clip_client: TestClient, tiny_clip
) -> None:
    model = tiny_clip[0]
    samples = list(image_models.sample_images().values())
    expected = torch_image_features(model, samples)
    got = []
    for start in range(0, len(samples), 4):  # the client allows 4 images per request
        chunk = samples[start : start + 4]
        response = clip_client.post(
            "/embed/image", files=files(chunk), data={"model": VISION, "normalize": "false"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == VISION and body["dim"] == 16
        assert body["usage"] == {"images": len(chunk)}
        got.extend(body["embeddings"])
    got_array = np.array(got, dtype=np.float32)
    assert got_array.shape == expected.shape
    assert cosine(got_array, expected).min() >= 0.9999
    np.testing.assert_allclose(got_array, expected, atol=1e-4)


def test_json_base64_and_data_uri_give_unit_vectors(clip_client: TestClient, tiny_clip) -> None:
    model = tiny_clip[0]
    samples = image_models.sample_images()
    images = [samples["rgb_37x53"], samples["palette_transparent"]]
    payload = [
        base64.b64encode(images[0]).decode(),
        "data:image/png;base64," + base64.b64encode(images[1]).decode(),
    ]
    response = clip_client.post("/embed/image", json={"images": payload})  # default model
    assert response.status_code == 200, response.text
    got = np.array(response.json()["embeddings"], dtype=np.float32)
    expected = torch_image_features(model, images)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-6)
    assert cosine(got, expected).min() >= 0.9999
    as_b64 = clip_client.post(
        "/embed/image", json={"images": payload[:1], "encoding_format": "base64"}
    ).json()["embeddings"][0]
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(as_b64), "<f4"), got[0], atol=1e-7)


def test_text_tower_on_embed_dense_matches_pytorch_and_finds_images(
    clip_client: TestClient, tiny_clip
) -> None:
    import torch
    from tokenizers import Tokenizer

    model, _, text_dir = tiny_clip
    texts = ["a photo of a cat", "red house", "the blue car on the tree"]
    response = clip_client.post("/embed/dense", json={"inputs": texts, "model": "tiny/clip-text"})
    assert response.status_code == 200, response.text
    got = np.array(response.json()["embeddings"], dtype=np.float32)
    tokenizer = Tokenizer.from_file(str(text_dir / "tokenizer.json"))
    tokenizer.no_padding()
    expected = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text).ids])
            features = model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))
            expected.append(features.pooler_output[0].numpy())
    assert cosine(got, np.stack(expected)).min() >= 0.9999
    # text-to-image search with one service: the scores equal PyTorch's
    image = image_models.sample_images()["rgb_37x53"]
    vector = np.array(
        clip_client.post("/embed/image", files=files([image])).json()["embeddings"][0]
    )
    reference_image = torch_image_features(model, [image])[0]
    reference_scores = cosine(np.stack(expected), reference_image[None])
    np.testing.assert_allclose(got @ vector, reference_scores, atol=1e-4)


# --- bad input: never a 500 -----------------------------------------------------------------------
def test_not_an_image(clip_client: TestClient) -> None:
    error = error_of(clip_client.post("/embed/image", files=files([b"plain text, no pixels"])), 400)
    assert error["message"] == NOT_AN_IMAGE


def test_truncated_image(clip_client: TestClient) -> None:
    data = image_models.sample_images()["large_jpeg_480x640"]
    error = error_of(clip_client.post("/embed/image", files=files([data[: len(data) // 2]])), 400)
    assert error["message"].startswith("image 0 could not be decoded (truncated or corrupt")


def test_empty_file(clip_client: TestClient) -> None:
    png = image_models.sample_images()["tiny_1x1"]
    error = error_of(clip_client.post("/embed/image", files=files([png, b""])), 400)
    assert error["message"] == "image 1 is empty (0 bytes)"


def test_zero_size_image(clip_client: TestClient) -> None:
    # A PNG whose header declares 0 x 5 pixels (Pillow refuses to identify it).
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0))
    png = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    error = error_of(clip_client.post("/embed/image", files=files([png])), 400)
    assert error["message"] == NOT_AN_IMAGE


def test_decompression_bomb(clip_client: TestClient) -> None:
    bomb = image_models.encoded(Image.new("L", (900, 600)))  # 540 k pixels in under 1 kB
    assert len(bomb) < 1_000
    error = error_of(clip_client.post("/embed/image", files=files([bomb])), 413)
    assert error["message"] == "image 0 has more pixels (900x600 = 540000) than the limit of 400000"
    assert error["code"] == "image_too_large"
    # Over twice the limit Pillow refuses it already while reading the header.
    huge = image_models.encoded(Image.new("1", (3000, 3000)))
    error = error_of(clip_client.post("/embed/image", files=files([huge])), 413)
    assert error["message"] == "image 0 has more pixels than the limit of 400000"


def test_file_over_the_byte_limit(clip_client: TestClient) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    big = image_models.encoded(Image.fromarray(noise))
    assert 300_000 < len(big) < 1_000_000
    error = error_of(clip_client.post("/embed/image", files=files([big])), 413)
    assert error["message"] == f"image 0 has {len(big)} bytes; the limit is 300000"
    payload = {"images": [base64.b64encode(big).decode()]}
    error = error_of(clip_client.post("/embed/image", json=payload), 413)
    assert error["message"].startswith("image 0 has ") and "the limit is 300000" in error["message"]


def test_oversized_body_refused_from_content_length(clip_client: TestClient) -> None:
    error = error_of(
        clip_client.post(
            "/embed/image", content=b"x" * 1_000_001, headers={"content-type": "application/json"}
        ),
        413,
    )
    assert error["message"] == "request body of 1000001 bytes is over the limit of 1000000 bytes"


def test_streamed_body_without_length_refused_before_the_end() -> None:
    """A chunked upload with no Content-Length: the guard stops reading at the first chunk
    past the limit."""
    pulled: list[int] = []

    async def receive() -> dict[str, Any]:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 100_000, "more_body": len(pulled) < 100}

    messages, size = asyncio.run(read_body(receive, 1_000_000))
    assert messages is None and size == 1_100_000
    assert too_large(size, 1_000_000, at_least=True).message == (
        "request body of at least 1100000 bytes is over the limit of 1000000 bytes"
    )
    assert len(pulled) == 11


def test_wrong_content_types(clip_client: TestClient) -> None:
    error = error_of(
        clip_client.post("/embed/image", content=b"abc", headers={"content-type": "text/plain"}),
        415,
    )
    assert error["message"].startswith("content type 'text/plain' is not accepted")
    png = image_models.sample_images()["tiny_1x1"]
    error = error_of(clip_client.post("/embed/image", files=files([png], "text/csv")), 415)
    assert error["message"] == (
        "image 0 (0.png) has content type 'text/csv'; an image type or application/octet-stream "
        "is needed"
    )
    uri = "data:text/html;base64," + base64.b64encode(png).decode()
    error = error_of(clip_client.post("/embed/image", json={"images": [uri]}), 415)
    assert error["message"] == "image 0 is a data URI of type 'text/html'; an image type is needed"


def test_too_many_images(clip_client: TestClient) -> None:
    png = image_models.sample_images()["tiny_1x1"]
    error = error_of(clip_client.post("/embed/image", files=files([png] * 5)), 400)
    assert error["message"] == "5 images in one request; the limit is 4"
    b64 = base64.b64encode(png).decode()
    error = error_of(clip_client.post("/embed/image", json={"images": [b64] * 5}), 400)
    assert error["message"] == "5 images in one request; the limit is 4"


def test_bad_json_and_base64(clip_client: TestClient) -> None:
    error = error_of(clip_client.post("/embed/image", json={"images": ["%%% not base64"]}), 400)
    assert error["message"] == "image 0 is not valid base64"
    error = error_of(clip_client.post("/embed/image", json={"images": []}), 400)
    assert error["message"] == "no images in the request"
    error = error_of(clip_client.post("/embed/image", json={"pictures": []}), 400)
    assert error["message"] == "pictures: Extra inputs are not permitted"
    json_type = {"content-type": "application/json"}
    response = clip_client.post("/embed/image", content=b"{not json", headers=json_type)
    assert error_of(response, 400)["code"] == "invalid_request"


def test_wrong_model_kind_and_unknown_model(clip_client: TestClient) -> None:
    png = base64.b64encode(image_models.sample_images()["tiny_1x1"]).decode()
    error = error_of(
        clip_client.post("/embed/image", json={"images": [png], "model": "tiny/clip-text"}), 400
    )
    assert "is a dense model; this route takes image models" in error["message"]
    error = error_of(clip_client.post("/embed/image", json={"images": [png], "model": "nope"}), 404)
    assert error["code"] == "model_not_found"


def test_extreme_aspect_ratio(clip_client: TestClient) -> None:
    strip = image_models.encoded(Image.new("RGB", (2000, 10)))
    error = error_of(clip_client.post("/embed/image", files=files([strip])), 400)
    assert error["message"] == "image 0 is 2000x10; the service takes aspect ratios up to 50:1"


def test_over_http_an_oversized_upload_is_refused_before_it_is_sent(tiny_clip) -> None:
    """A real server (uvicorn): a client announcing 200 MB gets 413 after sending only its
    headers and a few bytes, and a chunked body is cut off once it passes the limit."""
    env = {"EMBED_MODELS": str(tiny_clip[1]), "EMBED_IMAGE_MAX_REQUEST_BYTES": "1000000"}
    with running(env) as server:
        port = server.port
        head = b"POST /embed/image HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + b'Content-Length: 200000000\r\n\r\n{"images": [')
            answer = read_response(sock)
        assert answer.startswith("HTTP/1.1 413"), answer[:200]
        assert "request body of 200000000 bytes is over the limit of 1000000 bytes" in answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * 300_000
            for _ in range(4):  # 1.2 MB, then the client stops sending but keeps the socket open
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            answer = read_response(sock)
        assert answer.startswith("HTTP/1.1 413"), answer[:200]
        # refused at the first piece past the limit: the body never ended (no last chunk)
        seen = re.search(r"body of at least (\d+) bytes is over the limit of 1000000", answer)
        assert seen is not None and 1_000_000 < int(seen.group(1)) <= 1_200_000


def read_response(sock: socket.socket) -> str:
    """One whole HTTP response (headers and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def test_concurrent_image_requests_share_one_batch(tiny_clip) -> None:
    """Two requests prepared at the same time are merged into one inference batch, and each
    gets its own vectors back (PyTorch's, in its order)."""
    from service.engine.loading import load_all, stop_all
    from service.front.serving.image import embed_images
    from service.models.registry import ModelRegistry
    from service.ops.metrics import Metrics
    from service.settings import Settings

    model_torch, vision, _ = tiny_clip
    samples = list(image_models.sample_images().values())
    first, second = samples[:3], samples[3:5]
    settings = Settings(models=[str(vision)], max_wait_ms=500)

    async def run() -> tuple[int, np.ndarray, np.ndarray]:
        registry = ModelRegistry()
        await load_all(registry, settings, Metrics())
        model = registry.get(VISION, ("image",))
        assert model.batcher is not None
        before = model.batcher.batches_run
        try:
            a, b = await asyncio.gather(
                embed_images(model, first, settings), embed_images(model, second, settings)
            )
            return model.batcher.batches_run - before, a, b
        finally:
            await stop_all(registry)

    batches, a, b = asyncio.run(run())
    assert batches == 1
    np.testing.assert_allclose(a, torch_image_features(model_torch, first), atol=1e-4)
    np.testing.assert_allclose(b, torch_image_features(model_torch, second), atol=1e-4)

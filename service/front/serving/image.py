"""POST /embed/image logic: read the body within its limits, turn it into image bytes, embed.

The body is read by the route itself so that an oversized upload gets 413 from its
Content-Length, or as soon as the bytes streamed past the limit, never after reading it all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.front.schemas.image import EncodingFormat, ImageJsonRequest
from service.front.shared import inputs
from service.front.shared.image_fetch import FetchPolicy, fetch_image
from service.models.kinds.dense import Vectors
from service.models.kinds.image import prepare_images
from service.models.loaded import LoadedModel
from service.settings import Settings

DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*?;base64,", re.ASCII)
ACCEPTED_PART_TYPES = ("application/octet-stream", "")
Schema = TypeVar("Schema", bound=BaseModel)


@dataclass(frozen=True)
class ImageRequest:
    images: list[bytes]
    model: str | None = None
    normalize: bool | None = None
    encoding_format: EncodingFormat = "float"


async def read_image_request(request: Request, settings: Settings) -> ImageRequest:
    """Parse a JSON or multipart request into image bytes and options (415 for other types)."""
    send = "application/json with base64 images or multipart/form-data with image files"
    media_type, body = await read_body(request, send)
    if media_type == "application/json":
        return await _from_json(body, settings)
    return await _from_form(request, body, settings)


async def read_body(request: Request, send: str) -> tuple[str, bytes]:
    """The media type, JSON or multipart (else 415, saying what to `send`), and the body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("application/json", "multipart/form-data"):
        raise UnsupportedMediaType(
            f"content type {media_type or 'none'!r} is not accepted; send {send}"
        )
    return media_type, await request.body()  # its size is bounded by the guard (guard.py)


def parse_json(schema: type[Schema], body: bytes) -> Schema:
    """The JSON body validated by `schema`; errors rendered as FastAPI's own (400)."""
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def check_count(count: int, settings: Settings) -> None:
    limit = settings.image_max_images
    inputs.check_count(
        count, limit, items="images", param="images", empty="no images in the request"
    )


def _check_size(index: int, size: int, settings: Settings) -> None:
    if size > settings.image_max_bytes:
        raise PayloadTooLarge(
            f"image {index} has {size} bytes; the limit is {settings.image_max_bytes}",
            param="images",
            code="image_too_large",
        )


async def _from_json(body: bytes, settings: Settings) -> ImageRequest:
    parsed = parse_json(ImageJsonRequest, body)
    check_count(len(parsed.images) + len(parsed.urls), settings)
    images = [decode_base64(i, text, settings) for i, text in enumerate(parsed.images)]
    if parsed.urls:
        images += await asyncio.to_thread(fetch_all, parsed.urls, len(images), settings)
    return ImageRequest(images, parsed.model, parsed.normalize, parsed.encoding_format)


def fetch_all(urls: Sequence[str], first_index: int, settings: Settings) -> list[bytes]:
    """Fetch image URLs one after the other within one time limit (blocking)."""
    if not settings.image_fetch_urls:
        raise InvalidInput(
            "fetching images by URL is turned off on this service (EMBED_IMAGE_FETCH_URLS); "
            "send the images themselves",
            param="urls",
        )
    deadline = time.monotonic() + settings.image_fetch_timeout_s
    fetched = []
    for offset, url in enumerate(urls):
        left = deadline - time.monotonic()
        if left <= 0:
            raise InvalidInput(
                f"fetching the URLs took over {settings.image_fetch_timeout_s:g}s", param="urls"
            )
        policy = FetchPolicy(max_bytes=settings.image_max_bytes, timeout_s=left)
        fetched.append(fetch_image(first_index + offset, url, policy))
    return fetched


def decode_base64(index: int, text: str, settings: Settings) -> bytes:
    """A base64 string or a data URI (whose media type must be an image's) into bytes."""
    match = DATA_URI.match(text)
    if match is not None:
        media_type = (match.group("type") or "").lower()
        if not media_type.startswith("image/") and media_type not in ACCEPTED_PART_TYPES:
            raise UnsupportedMediaType(
                f"image {index} is a data URI of type {media_type!r}; an image type is needed",
                param="images",
            )
        text = text[match.end() :]
    elif text.startswith("data:"):
        raise InvalidInput(f"image {index} is a data URI without ;base64,", param="images")
    _check_size(index, len(text) * 3 // 4 - 2, settings)  # before decoding anything big
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"image {index} is not valid base64", param="images") from None


async def _from_form(request: Request, body: bytes, settings: Settings) -> ImageRequest:
    images, fields = await read_form(request, body, settings)
    check_count(len(images), settings)
    return _with_form_options(images, {key: value for key, value in fields})


async def read_form(
    request: Request, body: bytes, settings: Settings, max_fields: int = 32
) -> tuple[list[bytes], list[tuple[str, str]]]:
    """The image files (checked for type and size) and text fields of a multipart body."""
    replayed = Request(request.scope, receive=_replay(body))
    try:
        form = await replayed.form(max_files=settings.image_max_images + 1, max_fields=max_fields)
    except HTTPException as exc:  # malformed multipart, or far too many parts
        raise InvalidInput(f"multipart body: {exc.detail}", param="images") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if len(files) > settings.image_max_images:
            check_count(len(files), settings)
        images = [await _read_part(i, part, settings) for i, part in enumerate(files)]
        fields = [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
    finally:
        await form.close()
    return images, fields


def _replay(body: bytes) -> Receive:
    """A receive channel that gives the already read body again (for the form parser)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _read_part(index: int, part: UploadFile, settings: Settings) -> bytes:
    media_type = (part.content_type or "").split(";")[0].strip().lower()
    if not media_type.startswith("image/") and media_type not in ACCEPTED_PART_TYPES:
        raise UnsupportedMediaType(
            f"image {index} ({part.filename or 'unnamed'}) has content type {media_type!r}; "
            "an image type or application/octet-stream is needed",
            param="images",
        )
    _check_size(index, part.size or 0, settings)
    return await part.read()


def check_form_fields(names: Iterable[str], allowed: set[str]) -> None:
    unknown = set(names) - allowed
    if unknown:
        raise InvalidInput(f"unknown form fields {sorted(unknown)}", param=sorted(unknown)[0])


def form_encoding_format(value: str) -> EncodingFormat:
    formats: dict[str, EncodingFormat] = {"float": "float", "base64": "base64"}
    if value not in formats:
        raise InvalidInput("encoding_format must be float or base64", param="encoding_format")
    return formats[value]


def _with_form_options(images: list[bytes], fields: dict[str, str]) -> ImageRequest:
    check_form_fields(fields, {"model", "normalize", "encoding_format"})
    normalize = None
    if "normalize" in fields:
        value = fields["normalize"].lower()
        if value not in ("true", "false", "1", "0"):
            raise InvalidInput("normalize must be true or false", param="normalize")
        normalize = value in ("true", "1")
    encoding_format = form_encoding_format(fields.get("encoding_format", "float"))
    return ImageRequest(images, fields.get("model") or None, normalize, encoding_format)


async def embed_images(model: LoadedModel, images: Sequence[bytes], settings: Settings) -> Vectors:
    """Decode, preprocess (in the batcher's prepare thread) and embed; raw vectors (n, dim)."""
    assert model.batcher is not None
    max_pixels = settings.image_max_pixels
    vectors = await model.batcher.submit(lambda: prepare_images(model, images, max_pixels))
    return np.stack(vectors).astype(np.float32, copy=False)

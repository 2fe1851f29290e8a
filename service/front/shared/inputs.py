"""Request inputs that several routes share: one string or a list, the truncation choice, the
checks on how many inputs a request holds and how long each one is (400 or 413), and the
three together with the model for the routes that embed a list of texts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request

from service.errors import InvalidInput, PayloadTooLarge
from service.front.shared import deps
from service.models.loaded import LoadedModel
from service.settings import Settings


@dataclass(frozen=True)
class TextField:
    """How a request field of texts is named in errors, and what it may hold."""

    param: str  # the field: "input", "inputs", "queries"
    item: str  # one of its texts in messages: "input 3", "query 0"
    items: str  # several of them: "12 inputs in one request"
    required: bool = True  # an empty list is refused
    empty_strings: bool = False  # an empty string is allowed (sparse: an empty vector)


INPUT = TextField("input", "input", "inputs")
INPUTS = TextField("inputs", "input", "inputs", empty_strings=True)
QUERIES = TextField("queries", "query", "queries", required=False)


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def truncation(settings: Settings, asked: bool | None) -> bool:
    """The request's choice, else the service's default."""
    return settings.truncate if asked is None else asked


def check_count(count: int, limit: int, *, items: str, param: str, empty: str | None) -> None:
    """400 when there are more than `limit` items, or none where `empty` is the message."""
    if count == 0 and empty is not None:
        raise InvalidInput(empty, param=param)
    if count > limit:
        raise InvalidInput(f"{count} {items} in one request; the limit is {limit}", param=param)


def check_chars(text: str, where: str, settings: Settings, *, param: str) -> None:
    """413 when a text has more characters than the service accepts."""
    if len(text) > settings.max_input_chars:
        raise PayloadTooLarge(
            f"{where} has {len(text)} characters; the limit is {settings.max_input_chars}",
            param=param,
        )


def check_texts(texts: Sequence[str], settings: Settings, field: TextField = INPUT) -> None:
    """The count, emptiness and size checks on a list of texts, in the field's words."""
    empty = f"{field.param} must not be empty" if field.required else None
    limit = settings.max_inputs_per_request
    check_count(len(texts), limit, items=field.items, param=field.param, empty=empty)
    for index, text in enumerate(texts):
        if not text and not field.empty_strings:
            raise InvalidInput(f"{field.item} {index} is an empty string", param=field.param)
        check_chars(text, f"{field.item} {index}", settings, param=field.param)


class TextsBody(Protocol):
    """A request body with a model, one text or a list, and a truncation choice."""

    @property
    def model(self) -> str | None: ...
    @property
    def inputs(self) -> str | list[str]: ...
    @property
    def truncate(self) -> bool | None: ...


@dataclass(frozen=True)
class TextsCall:
    model: LoadedModel
    texts: list[str]
    truncate: bool


def texts_call(
    request: Request, body: TextsBody, kinds: tuple[str, ...], field: TextField = INPUT
) -> TextsCall:
    """The model (one of `kinds`; its 404 or 503 before any check of the texts), the texts
    as a checked list, and the truncation to apply."""
    model = deps.pick_model(request, body.model, *kinds)
    settings = deps.settings(request)
    texts = as_list(body.inputs)
    check_texts(texts, settings, field)
    return TextsCall(model, texts, truncation(settings, body.truncate))

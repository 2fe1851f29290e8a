"""The one check of the service's error envelope, for every API test."""

from __future__ import annotations

from typing import Any


def error_of(response: Any, status: int | None = None) -> dict[str, Any]:
    """The error of a response whose body is exactly {"error": {message, type, param, code}},
    after checking its status where one is given."""
    if status is not None:
        assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])

"""One error hierarchy for the whole service, and one table from error to HTTP status.

Every error a client sees is a ``ServiceError`` rendered in OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``; anything else is logged with its
traceback and answered with a generic 500 that carries the request id.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error whose message is safe to show to the client."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidInput(ServiceError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_input"


class Unauthorized(ServiceError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(ServiceError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(ServiceError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(ServiceError):
    status = 413
    type = "invalid_request_error"
    code = "input_too_long"


class UnsupportedMediaType(ServiceError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class Overloaded(ServiceError):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"


class Unavailable(ServiceError):
    status = 503
    type = "server_error"
    code = "unavailable"


class InferenceFailed(ServiceError):
    """An inference batch failed; every request in it gets this."""

    status = 500
    type = "server_error"
    code = "inference_failed"


class ModelLoadError(Exception):
    """A model could not be fetched or loaded at start-up (not an HTTP error)."""


def timed_out(model: str, seconds: float) -> Unavailable:
    """A request that waited longer than request_timeout_s for its inference."""
    return Unavailable(
        f"inference on {model!r} took longer than {seconds:g}s; the service is overloaded",
        code="timeout",
    )


def rebuild(
    name: str, message: str, code: str | None, param: str | None, headers: dict[str, str]
) -> ServiceError:
    """An error the engine process reported, as the class it was raised as there."""
    classes = {cls.__name__: cls for cls in _subclasses(ServiceError)}
    cls = classes.get(name, ServiceError)
    return cls(message, code=code, param=param, headers=headers)


def _subclasses(cls: type[ServiceError]) -> list[type[ServiceError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found

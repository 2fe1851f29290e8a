"""The optional shared layer of the result cache: Redis (or Valkey), for several replicas.

Values are encoded here, never pickled: whoever can write to the Redis must not be able to
run code in the service. Redis is a cache, never a dependency: when a call fails the layer
is marked unavailable (``/ready`` says so in its details, and stays 200), every lookup is a
miss and nothing is written, until a retry ``RETRY_S`` later finds Redis back.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
RETRY_S = 2.0  # after a failure, how long Redis is left alone before the next try
PREFIX = b"embed:"


class Unencodable(ValueError):
    pass


def encode(result: Any) -> bytes:
    """Arrays (of numbers), floats, ints and tuples or lists of them."""
    if isinstance(result, np.ndarray):
        if result.dtype.kind not in "fiub":
            raise Unencodable(result.dtype)
        dtype: bytes = result.dtype.str.encode()
        head = struct.pack("<BB", len(dtype), result.ndim) + dtype
        shape = struct.pack(f"<{result.ndim}q", *result.shape)
        data: bytes = np.ascontiguousarray(result).tobytes()
        return b"a" + head + shape + data
    if isinstance(result, bool | np.bool_):
        raise Unencodable(type(result))
    if isinstance(result, float | np.floating):
        return b"f" + struct.pack("<d", float(result))
    if isinstance(result, int | np.integer):
        return b"i" + struct.pack("<q", int(result))
    if isinstance(result, tuple | list):
        parts = [encode(part) for part in result]
        kind = b"t" if isinstance(result, tuple) else b"l"
        body = b"".join(struct.pack("<I", len(part)) + part for part in parts)
        return kind + struct.pack("<I", len(parts)) + body
    raise Unencodable(type(result))


def decode(data: bytes) -> Any:
    value, end = _decode(memoryview(data), 0)
    if end != len(data):
        raise ValueError("trailing bytes")
    return value


def _decode(data: memoryview, at: int) -> tuple[Any, int]:
    kind = bytes(data[at : at + 1])
    at += 1
    if kind == b"a":
        size, ndim = struct.unpack_from("<BB", data, at)
        at += 2
        dtype = np.dtype(bytes(data[at : at + size]).decode())
        at += size
        shape = struct.unpack_from(f"<{ndim}q", data, at)
        at += 8 * ndim
        count = int(np.prod(shape)) if ndim else 1
        array = np.frombuffer(data, dtype=dtype, count=count, offset=at).reshape(shape)
        array = array.copy()
        array.flags.writeable = False
        return array, at + count * dtype.itemsize
    if kind == b"f":
        return struct.unpack_from("<d", data, at)[0], at + 8
    if kind == b"i":
        return struct.unpack_from("<q", data, at)[0], at + 8
    if kind in (b"t", b"l"):
        (count,) = struct.unpack_from("<I", data, at)
        at += 4
        parts = []
        for _ in range(count):
            (length,) = struct.unpack_from("<I", data, at)
            part, end = _decode(data, at + 4)
            if end != at + 4 + length:
                raise ValueError("bad part length")
            parts.append(part)
            at = end
        return (tuple(parts) if kind == b"t" else parts), at
    raise ValueError(f"unknown tag {kind!r}")


class RedisCache:
    def __init__(self, url: str, ttl_s: int, timeout_s: float) -> None:
        import redis

        self.url = url
        self.ttl_s = ttl_s
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.errors = (redis.RedisError, OSError)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self.error: str | None = None  # why the layer is unavailable now, if it is

    @property
    def available(self) -> bool:
        return self.error is None

    def state(self) -> dict[str, Any]:
        """For /ready's details."""
        if self.error is None:
            return {"status": "ok", "url": _safe(self.url)}
        return {"status": "unavailable", "url": _safe(self.url), "error": self.error}

    def _usable(self) -> bool:
        with self._lock:
            return self.error is None or time.monotonic() >= self._down_until

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                log.warning("shared cache (Redis) unavailable, serving without it: %s", error)
            self.error = f"{type(error).__name__}: {error}"
            self._down_until = time.monotonic() + RETRY_S

    def _worked(self) -> None:
        with self._lock:
            if self.error is not None:
                log.info("the shared cache (Redis) is back")
            self.error = None

    def close(self) -> None:
        self.client.close()

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Any]:
        if not keys or not self._usable():
            return {}
        try:
            values: list[bytes | None] = self.client.mget(  # type: ignore[assignment]  # sync client
                [PREFIX + key for key in keys]
            )
        except self.errors as error:
            self._failed(error)
            return {}
        self._worked()
        found = {}
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                try:
                    found[key] = decode(value)
                except (ValueError, struct.error, TypeError):
                    log.warning("ignoring an undecodable shared cache entry")
        return found

    def put_many(self, entries: dict[bytes, Any]) -> None:
        if not entries or not self._usable():
            return
        pipeline = self.client.pipeline(transaction=False)
        for key, result in entries.items():
            try:
                pipeline.set(PREFIX + key, encode(result), ex=self.ttl_s)
            except Unencodable:
                continue
        try:
            pipeline.execute()
        except self.errors as error:
            self._failed(error)
            return
        self._worked()


def _safe(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest

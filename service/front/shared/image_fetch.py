"""Fetching images by URL for /embed/image: off by default (``EMBED_IMAGE_FETCH_URLS``).

A service that fetches URLs for its clients can be made to reach what only it can reach
(server-side request forgery): cloud metadata endpoints, admin consoles on loopback, hosts
of the private network. So when it is on: http and https only; the host name is resolved
once and every address it resolves to must be public (not private, loopback, link-local,
shared, multicast or reserved); the connection goes to the address that was checked (no
second lookup that could answer differently); redirects are followed by hand, each new
location checked the same way; the body is capped in bytes and the whole fetch in time.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from service.errors import InvalidInput, PayloadTooLarge

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 64 * 1024


def is_public(address: Address) -> bool:
    """Only globally routable unicast addresses (IPv4-mapped IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int) -> list[Address]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    timeout_s: float
    max_redirects: int = 3
    allowed: Callable[[Address], bool] = is_public
    resolver: Callable[[str, int], list[Address]] = resolve


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with SNI and certificate checks for the URL's host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _refuse(index: int, why: str) -> InvalidInput:
    return InvalidInput(f"image {index}: {why}", param="urls")


def _checked_target(index: int, url: str, policy: FetchPolicy) -> tuple[str, str, int, str]:
    """(scheme, host, port, address) of a URL whose host resolves to allowed addresses only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(index, "only http and https URLs with a host are fetched")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = policy.resolver(parts.hostname, port)
    except (OSError, UnicodeError):
        raise _refuse(index, f"host {parts.hostname!r} could not be resolved") from None
    if not addresses or not all(policy.allowed(a) for a in addresses):
        raise _refuse(index, f"host {parts.hostname!r} is not a public address; refused")
    return parts.scheme, parts.hostname, port, str(addresses[0])


def fetch_image(index: int, url: str, policy: FetchPolicy) -> bytes:
    """GET one image URL under the policy (blocking: call it in a thread)."""
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(policy.max_redirects + 1):
        scheme, host, port, address = _checked_target(index, url, policy)
        pinned = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
        connection = pinned(host, address, port, max(0.1, deadline - time.monotonic()))
        try:
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", path, headers={"Host": parts.netloc, "Accept": "image/*"})
            with connection.getresponse() as response:
                if response.status in REDIRECTS and response.getheader("location"):
                    url = urljoin(url, response.getheader("location", ""))
                    continue
                if response.status != 200:
                    raise _refuse(index, f"the URL answered HTTP {response.status}")
                return _read_capped(index, response, policy.max_bytes, deadline)
        except (OSError, http.client.HTTPException) as exc:
            raise _refuse(index, f"the URL could not be fetched ({type(exc).__name__})") from None
        finally:
            connection.close()
    raise _refuse(index, f"more than {policy.max_redirects} redirects")


def _read_capped(
    index: int, response: http.client.HTTPResponse, limit: int, deadline: float
) -> bytes:
    declared = response.getheader("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(index, int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(index, size, limit, at_least=True)
        if time.monotonic() > deadline:
            raise _refuse(index, "the URL took too long to answer")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(index: int, size: int, limit: int, *, at_least: bool = False) -> PayloadTooLarge:
    more = "at least " if at_least else ""
    return PayloadTooLarge(
        f"image {index} at its URL has {more}{size} bytes; the limit is {limit}",
        param="urls",
        code="image_too_large",
    )

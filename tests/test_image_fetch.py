"""Fetching images by URL: off by default; when on, only public addresses (after DNS and
after every redirect), capped in size. A local HTTP server stands in for the internet: the
tests allow 127.0.0.1 by policy where they need a fetch to succeed, and show that the default
policy refuses it."""

from __future__ import annotations

import http.server
import ipaddress
import threading
from collections.abc import Iterator

import pytest

from service.errors import InvalidInput, PayloadTooLarge
from service.front.shared.image_fetch import FetchPolicy, fetch_image, is_public
from tests import image_models
from tests.conftest import serving

PNG = image_models.sample_images()["rgb_37x53"]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes = {
            "/cat.png": (200, {"Content-Type": "image/png"}, PNG),
            "/to-cat": (302, {"Location": "/cat.png"}, b""),
            "/to-private": (302, {"Location": "http://10.1.2.3/cat.png"}, b""),
            "/to-metadata": (307, {"Location": "http://169.254.169.254/latest/"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/big": (200, {"Content-Type": "image/png"}, b"x" * 20_000),
        }
        status, headers, body = routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def local_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def loopback_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address == ipaddress.ip_address("127.0.0.1")


LOOPBACK_OK = FetchPolicy(max_bytes=10_000, timeout_s=5, allowed=loopback_allowed)


def test_public_address_policy() -> None:
    refused = [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ]
    assert not any(is_public(ipaddress.ip_address(a)) for a in refused)
    assert all(is_public(ipaddress.ip_address(a)) for a in ["8.8.8.8", "2606:4700::1111"])


def test_default_policy_refuses_a_live_loopback_server(local_url: str) -> None:
    policy = FetchPolicy(max_bytes=4000, timeout_s=5)
    with pytest.raises(InvalidInput) as raised:
        fetch_image(0, f"{local_url}/cat.png", policy)
    assert raised.value.message == "image 0: host '127.0.0.1' is not a public address; refused"
    with pytest.raises(InvalidInput) as raised:  # a name that resolves to loopback
        fetch_image(0, "http://localhost/cat.png", policy)
    assert raised.value.message == "image 0: host 'localhost' is not a public address; refused"


def test_schemes_other_than_http_are_refused() -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/", "http:///nohost"):
        with pytest.raises(InvalidInput) as raised:
            fetch_image(2, url, LOOPBACK_OK)
        assert raised.value.message == "image 2: only http and https URLs with a host are fetched"


def test_fetch_and_redirects_are_checked_at_every_hop(local_url: str) -> None:
    assert fetch_image(0, f"{local_url}/cat.png", LOOPBACK_OK) == PNG
    assert fetch_image(0, f"{local_url}/to-cat", LOOPBACK_OK) == PNG
    for path, host in (("/to-private", "10.1.2.3"), ("/to-metadata", "169.254.169.254")):
        with pytest.raises(InvalidInput) as raised:
            fetch_image(0, f"{local_url}{path}", LOOPBACK_OK)
        assert raised.value.message == f"image 0: host '{host}' is not a public address; refused"
    with pytest.raises(InvalidInput) as raised:
        fetch_image(0, f"{local_url}/loop", LOOPBACK_OK)
    assert raised.value.message == "image 0: more than 3 redirects"
    with pytest.raises(InvalidInput) as raised:
        fetch_image(0, f"{local_url}/missing", LOOPBACK_OK)
    assert raised.value.message == "image 0: the URL answered HTTP 404"


def test_size_cap(local_url: str) -> None:
    with pytest.raises(PayloadTooLarge) as raised:
        fetch_image(1, f"{local_url}/big", LOOPBACK_OK)
    assert raised.value.message == "image 1 at its URL has 20000 bytes; the limit is 10000"


def test_route_refuses_urls_while_the_setting_is_off(tiny_dense) -> None:
    with serving(models=[str(tiny_dense[0])]) as client:  # no image model needed to refuse
        response = client.post("/embed/image", json={"urls": ["http://example.com/a.png"]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "fetching images by URL is turned off on this service (EMBED_IMAGE_FETCH_URLS); "
        "send the images themselves"
    )


def test_route_with_fetching_on_still_refuses_loopback(tiny_dense, local_url: str) -> None:
    with serving(models=[str(tiny_dense[0])], image_fetch_urls=True) as client:
        response = client.post("/embed/image", json={"urls": [f"{local_url}/cat.png"]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "image 0: host '127.0.0.1' is not a public address; refused"
    )

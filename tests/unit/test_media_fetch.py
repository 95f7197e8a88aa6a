"""Fetching media: data: URL limits, URL validation, the SSRF guard on every redirect hop, size caps."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qwenhost.media.errors import MediaError
from qwenhost.media.fetch import Fetcher, decode_data_url, is_public
from qwenhost.media.policy import MediaPolicy

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/img":
            self._send(200, PNG, "image/png")
        elif self.path == "/big":
            self._send(200, b"x" * 5000, "image/png")
        elif self.path == "/html":
            self._send(200, b"<html>", "text/html")
        elif self.path == "/to-loopback":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{port}/img")
            self.end_headers()
        elif self.path == "/to-img":
            self.send_response(302)
            self.send_header("Location", "/img")
            self.end_headers()
        else:
            self._send(404, b"nope", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()


def fetch(url: str, **policy: object) -> bytes:
    async def go() -> bytes:
        fetcher = Fetcher(MediaPolicy(**policy))  # type: ignore[arg-type]
        try:
            return await fetcher.fetch(url, "image")
        finally:
            await fetcher.close()

    return asyncio.run(go())


def test_data_url_round_trip_and_limit() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert decode_data_url(url, 10_485_760) == PNG
    with pytest.raises(MediaError, match=re.escape("Exceeded limit on max bytes per data-uri item : 50'.")):
        decode_data_url(url, 50)


@pytest.mark.parametrize(
    "url",
    ["data:image/png,notbase64", "ftp://example.com/a.png", "file:///etc/passwd", "example.com/a.png", "data:;base64,"],
)
def test_invalid_urls(url: str) -> None:
    with pytest.raises(
        MediaError, match=re.escape("The provided URL does not appear to be valid. Ensure it is correctly formatted.")
    ):
        fetch(url)


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1", "0.0.0.0"]
)
def test_private_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)
    assert is_public("8.8.8.8")


def test_loopback_refused_by_default(origin: str) -> None:
    with pytest.raises(MediaError, match=re.escape("Failed to download multimodal content.")):
        fetch(origin + "/img")
    with pytest.raises(MediaError, match=re.escape("Failed to download multimodal content.")):
        fetch(origin.replace("localhost", "169.254.169.254") + "/img", fetch_timeout_s=2)


def test_allowed_when_operator_says_so(origin: str) -> None:
    assert fetch(origin + "/img", allow_private_urls=True) == PNG
    assert fetch(origin + "/to-img", allowed_hosts=("localhost",)) == PNG


def test_every_redirect_is_checked(origin: str) -> None:
    # localhost is allowed by name; the redirect to 127.0.0.1 is a new host and is checked again.
    with pytest.raises(MediaError, match=re.escape("Failed to download multimodal content.")):
        fetch(origin + "/to-loopback", allowed_hosts=("localhost",))


def test_caps_and_failures(origin: str) -> None:
    with pytest.raises(MediaError, match=re.escape("Multimodal file size is too large")):
        fetch(origin + "/big", allow_private_urls=True, max_image_bytes=1000)
    with pytest.raises(MediaError, match=re.escape("Failed to download multimodal content.")):
        fetch(origin + "/missing", allow_private_urls=True)
    with pytest.raises(MediaError, match=re.escape("Wrong Content-Type of multimodal url")):
        fetch(origin + "/html", allow_private_urls=True)
    with contextlib.suppress(MediaError):
        fetch("http://nonexistent.invalid/x.png")

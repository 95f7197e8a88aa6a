"""Fetching media: data: URL limits, URL validation, the SSRF guard on every redirect hop and on every IPv6
form that embeds an IPv4 address, size caps, the per-request byte budget."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qwenhost.media.errors import MediaError
from qwenhost.media.fetch import ByteBudget, Fetcher, decode_data_url, is_public
from qwenhost.media.policy import MediaPolicy

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/img":
            self._send(200, PNG, "image/png")
        elif self.path == "/big":
            self._send(200, b"x" * 5000, "image/png")
        elif self.path == "/big-undeclared":  # no Content-Length: only counting the bytes can catch it
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(b"x" * 5000)
            self.close_connection = True
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


def fetch(url: str, budget: ByteBudget | None = None, **policy: object) -> bytes:
    async def go() -> bytes:
        fetcher = Fetcher(MediaPolicy(**policy))  # type: ignore[arg-type]
        try:
            return await fetcher.fetch(url, "image", budget)
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


# Each IPv6 form that carries an IPv4 address, as a function of that address.
def _teredo(v4: str) -> str:  # the client (the NAT's public address) is stored XORed with 0xffffffff
    client = int(ipaddress.IPv4Address(v4)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (int(ipaddress.IPv4Address("8.8.4.4")) << 64) | client))


def _teredo_server(v4: str) -> str:  # a Teredo address whose server is ``v4`` and whose client is public
    client = int(ipaddress.IPv4Address("1.1.1.1")) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (int(ipaddress.IPv4Address(v4)) << 64) | client))


def _sixtofour(v4: str) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(v4)) << 80) | 1))


EMBEDDINGS: dict[str, Callable[[str], str]] = {
    "ipv4-mapped": lambda v4: f"::ffff:{v4}",
    "ipv4-translated": lambda v4: f"::ffff:0:{v4}",
    "ipv4-compatible": lambda v4: f"::{v4}",
    "nat64": lambda v4: f"64:ff9b::{v4}",
    "6to4": _sixtofour,
    "teredo-client": _teredo,
    "teredo-server": _teredo_server,
    "isatap": lambda v4: f"2001:4860:1:2:0:5efe:{v4}",
    "isatap-universal": lambda v4: f"2001:4860:1:2:200:5efe:{v4}",
}
NOT_PUBLIC = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]


@pytest.mark.parametrize("inner", NOT_PUBLIC)
@pytest.mark.parametrize("form", sorted(EMBEDDINGS))
def test_embedded_private_ipv4_is_refused(form: str, inner: str) -> None:
    address = EMBEDDINGS[form](inner)
    assert ipaddress.ip_address(address)  # a well-formed address: the guard, not the parser, refuses it
    assert not is_public(address), address


@pytest.mark.parametrize("form", sorted(EMBEDDINGS))
def test_embedded_public_ipv4_is_allowed(form: str) -> None:
    assert is_public(EMBEDDINGS[form]("8.8.8.8"))


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b:1::808:808",  # local-use NAT64 (RFC 8215): where the IPv4 sits is the operator's choice
        "64:ff9b:1:ffff::a00:1",
        "fe80::5efe:808:808",  # ISATAP under a link-local prefix: the prefix counts too
        "fd00::200:5efe:808:808",  # ... and under a unique-local one
        "::ffff:224.0.0.1",  # multicast, embedded
    ],
)
def test_other_non_public_forms(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["2001:4860:4860::8888", "2606:4700:4700::1111", "1.1.1.1"])
def test_plain_public_addresses(address: str) -> None:
    assert is_public(address)


def test_byte_budget_spans_items(origin: str) -> None:
    budget = ByteBudget(8000)
    assert fetch(origin + "/big", budget, allow_private_urls=True) == b"x" * 5000
    assert budget.used == 5000
    message = re.escape("The media of the request exceed 8000 bytes in all (max_media_bytes).")
    with pytest.raises(MediaError, match=message):  # declared: refused before the body is read
        fetch(origin + "/big", budget, allow_private_urls=True)
    with pytest.raises(MediaError, match=message):  # undeclared: refused while counting
        fetch(origin + "/big-undeclared", budget, allow_private_urls=True)
    data_url = "data:image/png;base64," + base64.b64encode(b"y" * 3001).decode()
    with pytest.raises(MediaError, match=message):  # decoded data: URL bytes count too
        fetch(data_url, budget)
    assert fetch(data_url, ByteBudget(3001)) == b"y" * 3001

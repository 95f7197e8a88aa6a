"""Media bytes from data: URLs and http(s) URLs, with size caps, timeouts and an SSRF guard.

Every hop of a redirect chain is resolved and checked before it is contacted, and the connection
goes to the checked address (the Host header and TLS SNI keep the name), so a DNS answer that
changes between the check and the connect (rebinding) cannot reach a private address.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx

from qwenhost.media import errors
from qwenhost.media.policy import MediaPolicy

REDIRECTS = (301, 302, 303, 307, 308)
_REFUSED_TYPES = ("text/html", "text/plain", "application/json", "application/xml", "text/xml")


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """``data:[<type>][;base64],<payload>``; DashScope requires base64 (spec §3.3)."""
    header, sep, payload = url[5:].partition(",")
    if not sep or "base64" not in header.split(";"):
        raise errors.invalid_url()
    # base64 grows data by 4/3: refuse before decoding anything far too large.
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4 * 1024:
        raise errors.data_uri_too_large(max_bytes)
    try:
        data = base64.b64decode(unquote_to_bytes(payload.strip()), validate=False)
    except (binascii.Error, ValueError):
        raise errors.invalid_url() from None
    if len(data) > max_bytes:
        raise errors.data_uri_too_large(max_bytes)
    if not data:
        raise errors.invalid_url()
    return data


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class Fetcher:
    """Downloads one URL at a time per call; shared by all requests (an httpx client pool)."""

    def __init__(self, policy: MediaPolicy, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.policy = policy
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(policy.fetch_timeout_s),
            headers={"user-agent": policy.user_agent, "accept-encoding": "identity"},  # caps count real bytes
            trust_env=False,  # an operator's HTTP(S)_PROXY must not silently bypass the address checks
        )
        self._slots = asyncio.Semaphore(policy.max_concurrent_fetches)

    async def close(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, kind: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_url(url, self.policy.max_data_uri_bytes)
        if not url.startswith(("http://", "https://")):
            raise errors.invalid_url()
        try:
            async with self._slots, asyncio.timeout(self.policy.fetch_timeout_s):
                return await self._follow(url, self.policy.limit_for(kind))
        except TimeoutError:
            raise errors.download_timeout() from None

    async def _follow(self, url: str, max_bytes: int) -> bytes:
        for _ in range(self.policy.max_redirects + 1):
            target = await self._checked_target(url)
            try:
                async with self._client.stream(
                    "GET", target.url, headers=target.headers, extensions=target.extensions
                ) as r:
                    if r.status_code in REDIRECTS and "location" in r.headers:
                        url = urljoin(url, r.headers["location"])
                        continue
                    if r.status_code != 200:
                        raise errors.download_failed()
                    content_type = r.headers.get("content-type", "").split(";")[0].strip().lower()
                    if content_type in _REFUSED_TYPES:
                        raise errors.wrong_content_type()
                    declared = r.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                        raise errors.too_large()
                    return await _read_capped(r, max_bytes)
            except httpx.HTTPError:
                raise errors.download_failed() from None
        raise errors.download_failed()  # too many redirects

    async def _checked_target(self, url: str) -> _Target:
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise errors.invalid_url()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise errors.invalid_url() from None
        address = await self._resolve(host, port)
        netloc = f"[{address}]" if ":" in address else address
        pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
        default_port = port == (443 if parts.scheme == "https" else 80)
        host_header = host if default_port else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]" if default_port else f"[{host}]:{port}"
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        return _Target(pinned, {"host": host_header}, extensions)

    async def _resolve(self, host: str, port: int) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise errors.download_failed() from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise errors.download_failed()
        trusted = self.policy.allow_private_urls or host.lower() in self.policy.allowed_hosts
        if not trusted and not all(is_public(a) for a in addresses):
            # Loopback, private, link-local (cloud metadata at 169.254.169.254) …: refused unless allowed.
            raise errors.download_failed()
        return addresses[0]


class _Target:
    __slots__ = ("extensions", "headers", "url")

    def __init__(self, url: str, headers: dict[str, str], extensions: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.extensions = extensions


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > max_bytes:
            raise errors.too_large()
        chunks.append(chunk)
    return b"".join(chunks)

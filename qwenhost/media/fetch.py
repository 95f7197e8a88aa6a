"""Media bytes from data: URLs, http(s) URLs and oss:// uploads, with size caps, timeouts and an SSRF guard.

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
from qwenhost.media.oss import SCHEME, ObjectSource
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
    """Whether ``address`` (and every IPv4 address it carries inside IPv6) is on the public internet."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return _public(ip)
    if ip in _NAT64_LOCAL:
        # RFC 8215 local-use NAT64: the operator picks the prefix length, so the embedded IPv4 address
        # cannot be located; it is not globally reachable (IANA) and is refused whatever it carries.
        return False
    embedded = embedded_ipv4(ip)
    if embedded is None:
        return _public(ip)
    inner, outer_counts = embedded
    # The packets go to the embedded address (a NAT64 gateway, 6to4 relay or Teredo NAT forwards them),
    # so it decides; Python's own verdict on the IPv6 form misses all but the IPv4-mapped one.
    return all(_public(v4) for v4 in inner) and (not outer_counts or _public(ip))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[tuple[ipaddress.IPv4Address, ...], bool] | None:
    """The IPv4 addresses an IPv6 address carries and whether the IPv6 address itself must be public too.

    None for a plain IPv6 address. Teredo yields its server and its (XOR-obfuscated) client; ISATAP's
    prefix is routed natively, so both the prefix and the embedded address must be public.
    """
    value = int(ip)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    for network in _LOW32_FORMS:
        if ip in network:
            return (low32,), False
    if ip.sixtofour is not None:
        return (ip.sixtofour,), False
    if ip.teredo is not None:
        return ip.teredo, False
    if (value >> 32) & _ISATAP_MASK == _ISATAP_ID:
        return (low32,), True
    return None


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


_LOW32_FORMS = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT, RFC 2765)
        "::/96",  # IPv4-compatible (deprecated; also :: and ::1, which unwrap to 0.0.0.0 and 0.0.0.1)
        "64:ff9b::/96",  # NAT64 well-known prefix (RFC 6052)
    )
)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_ISATAP_ID = 0x00005EFE  # interface id 0000:5efe:a.b.c.d (RFC 5214) …
_ISATAP_MASK = 0xFDFFFFFF  # … or 0200:5efe:a.b.c.d (the universal/local bit set)


class ByteBudget:
    """The media bytes one request may still take in, all its parts together (max_media_bytes).

    Shared by the request's concurrent fetches; only touched on the event loop, so it needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def check(self, size: int) -> None:
        """Refuse now when ``size`` more bytes (a declared Content-Length) cannot fit."""
        if self.used + size > self.limit:
            raise errors.too_many_bytes(self.limit)

    def charge(self, size: int) -> None:
        self.check(size)
        self.used += size


class Fetcher:
    """Downloads one URL at a time per call; shared by all requests (an httpx client pool)."""

    def __init__(
        self,
        policy: MediaPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        objects: ObjectSource | None = None,
    ) -> None:
        self.policy = policy
        self.objects = objects  # the upload store that oss:// URLs name; None: uploads are not served
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

    async def fetch(self, url: str, kind: str, budget: ByteBudget | None = None, *, resolve_oss: bool = False) -> bytes:
        """The bytes of one media item; ``budget`` (the request's max_media_bytes) is charged as they come.
        ``resolve_oss``: the request allows oss:// URLs (X-DashScope-OssResourceResolve: enable)."""
        budget = budget or ByteBudget(self.policy.max_media_bytes)
        if url.startswith("data:"):
            data = decode_data_url(url, self.policy.max_data_uri_bytes)
            budget.charge(len(data))
            return data
        if url.startswith(SCHEME):
            if not resolve_oss:
                raise errors.invalid_url()
            return await self._read_object(url.removeprefix(SCHEME), kind, budget)
        if not url.startswith(("http://", "https://")):
            raise errors.invalid_url()
        try:
            async with self._slots, asyncio.timeout(self.policy.fetch_timeout_s):
                return await self._follow(url, self.policy.limit_for(kind), budget)
        except TimeoutError:
            raise errors.download_timeout() from None

    async def fetch_page(self, url: str, max_bytes: int) -> bytes:
        """A web page (search's agent_max reads top results): the same address checks, redirects and caps,
        text types accepted."""
        if not url.startswith(("http://", "https://")):
            raise errors.invalid_url()
        try:
            async with self._slots, asyncio.timeout(self.policy.fetch_timeout_s):
                return await self._follow(url, max_bytes, ByteBudget(max_bytes), is_page=True)
        except TimeoutError:
            raise errors.download_timeout() from None

    async def _read_object(self, key: str, kind: str, budget: ByteBudget) -> bytes:
        """An uploaded object; DashScope resolves oss:// only with X-DashScope-OssResourceResolve: enable,
        otherwise the URL is invalid. A key that names no live object (unknown, expired) cannot be downloaded."""
        if self.objects is None:
            raise errors.invalid_url()
        data = await asyncio.to_thread(_read_object, self.objects, key, self.policy.limit_for(kind))
        budget.charge(len(data))
        return data

    async def _follow(self, url: str, max_bytes: int, budget: ByteBudget, *, is_page: bool = False) -> bytes:
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
                    if content_type in _REFUSED_TYPES and not is_page:
                        raise errors.wrong_content_type()
                    declared = r.headers.get("content-length")
                    if declared is not None and declared.isdigit():
                        if int(declared) > max_bytes:
                            raise errors.too_large()
                        budget.check(int(declared))
                    return await _read_capped(r, max_bytes, budget)
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


def _read_object(objects: ObjectSource, key: str, max_bytes: int) -> bytes:
    """Off the event loop: the object's bytes, at most ``max_bytes`` (the media kind's URL limit)."""
    handle = objects.open_object(key)
    if handle is None:
        raise errors.download_failed()
    with handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise errors.too_large()
    return data


async def _read_capped(response: httpx.Response, max_bytes: int, budget: ByteBudget) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > max_bytes:
            raise errors.too_large()
        budget.charge(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)

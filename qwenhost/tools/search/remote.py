"""SearXNG, Brave and Tavily over their HTTP APIs (docs/search.md): a timeout per attempt, one retry after a
transport error, a timeout or a 5xx, and any failure an empty result and a log line — never the client's 5xx."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from qwenhost.tools.search.provider import Hit

log = logging.getLogger("qwenhost.search")

ATTEMPTS = 2  # one retry
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class _Http:
    """One provider's client: a JSON request, retried once, its failures logged and answered with None."""

    def __init__(self, name: str, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), transport=transport, trust_env=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self._client.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200 and len(response.content) <= MAX_RESPONSE_BYTES:
                    try:
                        return response.json()
                    except ValueError:
                        problem = "the answer is not JSON"
                else:
                    problem = f"HTTP {response.status_code}"
                if response.status_code < 500:
                    attempt = ATTEMPTS  # a 4xx or a bad body does not get better on retry
            if attempt >= ATTEMPTS:
                log.warning("search provider %s failed: %s (no results used)", self.name, problem)
                return None
        return None


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def _items(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


class SearxngProvider:
    """``GET {base}/search?q=…&format=json`` → ``results[] {url,title,content,publishedDate}`` (no count
    parameter: the first ``k`` are kept). The instance must list json in search.formats, else 403."""

    name = "searxng"

    def __init__(
        self, base_url: str | None, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = (base_url or "").rstrip("/")
        self.http = _Http(self.name, timeout_s, transport)

    def is_usable(self) -> bool:
        return bool(self.base_url)

    async def search(self, query: str, *, k: int) -> list[Hit]:
        body = await self.http.json("GET", f"{self.base_url}/search", params={"q": query, "format": "json"})
        results = _items(body.get("results")) if isinstance(body, Mapping) else []
        return [
            Hit(_text(r, "title"), _text(r, "url"), _text(r, "content"), _text(r, "publishedDate") or None, self.name)
            for r in results
            if _text(r, "url")
        ][:k]


class _KeyedProvider:
    """A provider behind an API key: usable only once the key is configured."""

    name = "keyed"

    def __init__(
        self, base_url: str, api_key: str | None, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.http = _Http(self.name, timeout_s, transport)

    def is_usable(self) -> bool:
        return bool(self.api_key)


class BraveProvider(_KeyedProvider):
    """``GET {base}/res/v1/web/search?q=…&count=k`` with ``X-Subscription-Token`` → ``web.results[]``."""

    name = "brave"

    async def search(self, query: str, *, k: int) -> list[Hit]:
        headers = {"X-Subscription-Token": self.api_key or "", "Accept": "application/json"}
        body = await self.http.json(
            "GET", f"{self.base_url}/res/v1/web/search", params={"q": query, "count": min(k, 20)}, headers=headers
        )
        web = body.get("web") if isinstance(body, Mapping) else None
        results = _items(web.get("results")) if isinstance(web, Mapping) else []
        return [
            Hit(
                _text(r, "title"),
                _text(r, "url"),
                _text(r, "description"),
                _text(r, "page_age") or _text(r, "age") or None,
                self.name,
            )
            for r in results
            if _text(r, "url")
        ][:k]


class TavilyProvider(_KeyedProvider):
    """``POST {base}/search {query, max_results, search_depth: basic}`` with a Bearer key → ``results[]``."""

    name = "tavily"

    async def search(self, query: str, *, k: int) -> list[Hit]:
        payload = {"query": query, "max_results": min(k, 20), "search_depth": "basic"}
        headers = {"Authorization": f"Bearer {self.api_key or ''}"}
        body = await self.http.json("POST", f"{self.base_url}/search", json=payload, headers=headers)
        results = _items(body.get("results")) if isinstance(body, Mapping) else []
        return [
            Hit(_text(r, "title"), _text(r, "url"), _text(r, "content"), _text(r, "published_date") or None, self.name)
            for r in results
            if _text(r, "url")
        ][:k]

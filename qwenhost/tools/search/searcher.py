"""The strategies over the provider chain (spec §4.8), the results text the model reads, and the reserved
``search`` tool the service's loop offers (core/server_tools.py)."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from qwenhost.core.server_tools import ToolOutcome
from qwenhost.core.types import ToolSpec
from qwenhost.tools.search.config import SearchConfig
from qwenhost.tools.search.provider import Hit, SearchProvider

log = logging.getLogger("qwenhost.search")

MAX_QUERY_CHARS = 300
# (url, max_bytes) -> the page's readable text, or None when it cannot be read. Injected by the service:
# it goes through the media fetcher's SSRF guard, which this layer may not import.
PageReader = Callable[[str, int], Awaitable[str | None]]
SEARCH_TOOL = ToolSpec(
    name="search",
    description="Search the web and the operator's documents. Use it for facts you do not know or that may "
    "have changed; the results come back with numbers to cite as [n].",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "what to search for", "maxLength": 120}},
        "required": ["query"],
    },
)


class Searcher:
    def __init__(
        self, providers: Sequence[SearchProvider], config: SearchConfig, read_page: PageReader | None = None
    ) -> None:
        self.providers = tuple(providers)
        self.config = config
        self.read_page = read_page

    def usable(self) -> list[SearchProvider]:
        return [p for p in self.providers if p.is_usable()]

    async def search(self, query: str, strategy: str) -> list[Hit]:
        """turbo/agent: the chain, the first provider with hits; max: every usable provider merged by URL;
        agent_max: the chain, then the top pages read (remote hits only; a local hit is its passage)."""
        query = " ".join(query.split())[:MAX_QUERY_CHARS]
        if not query:
            return []
        if strategy == "max":
            return await self._merged(query, self.config.max_results_max)
        hits = await self._chain(query, self.config.max_results)
        if strategy == "agent_max" and self.read_page is not None:
            hits = await self._with_pages(hits)
        return hits

    async def _chain(self, query: str, k: int) -> list[Hit]:
        for provider in self.usable():
            hits = await provider.search(query, k=k)
            if hits:
                return hits
        return []

    async def _merged(self, query: str, k: int) -> list[Hit]:
        lists = await asyncio.gather(*(p.search(query, k=k) for p in self.usable()))
        seen: set[str] = set()
        merged: list[Hit] = []
        for rank in range(max((len(h) for h in lists), default=0)):  # round-robin: each provider's best first
            for hits in lists:
                if rank < len(hits) and hits[rank].url not in seen:
                    seen.add(hits[rank].url)
                    merged.append(hits[rank])
        return merged[:k]

    async def _with_pages(self, hits: list[Hit]) -> list[Hit]:
        assert self.read_page is not None
        read = self.read_page
        top = [i for i, h in enumerate(hits) if h.url.startswith(("http://", "https://"))][: self.config.pages]
        texts = await asyncio.gather(*(read(hits[i].url, self.config.page_bytes) for i in top))
        out = list(hits)
        for i, text in zip(top, texts, strict=True):
            if text:
                h = out[i]
                out[i] = Hit(h.title, h.url, text, h.published, h.source)
        return out


def results_text(hits: Sequence[Hit], max_chars: int) -> str:
    """Numbered as Qwen-Agent's web_search formats them (Qwen was tuned on it): [n] "title\\nsnippet" date url."""
    parts, used = [], 0
    budget = max(200, max_chars // max(1, len(hits)))  # each hit its share: one long page cannot crowd out the rest
    for n, hit in enumerate(hits, 1):
        snippet = hit.snippet if len(hit.snippet) <= budget else hit.snippet[:budget] + "…"
        item = f'[{n}] "{hit.title}\n{snippet}" {hit.published or ""} {hit.url}'.replace("  ", " ")
        if used + len(item) > max_chars:
            break
        parts.append(item)
        used += len(item) + 1
    return "\n".join(parts)


def search_info(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """Native ``output.search_info.search_results[]`` items (spec §4.8): index, title, url, site_name, icon."""
    return [
        {"index": n, "title": h.title, "url": h.url, "site_name": h.site_name, "icon": ""}
        for n, h in enumerate(hits, 1)
    ]


def today() -> str:
    return datetime.date.today().isoformat()


class SearchTool:
    """The reserved ``search`` function (spec §3.3 reserves the name) for one request's strategy."""

    name = "search"

    def __init__(self, searcher: Searcher, strategy: str) -> None:
        self.searcher = searcher
        self.strategy = strategy

    def definition(self) -> ToolSpec:
        return SEARCH_TOOL

    async def run(self, arguments: Mapping[str, Any], *, timeout_s: float) -> ToolOutcome:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            return ToolOutcome(text='The search needs a non-empty "query" string.')
        try:
            async with asyncio.timeout(timeout_s):
                hits = await self.searcher.search(query, self.strategy)
        except TimeoutError:
            log.warning("search for %r ran out of time (%.1f s)", query, timeout_s)
            hits = []
        info = {"query": query, "search_results": search_info(hits)}
        if not hits:
            return ToolOutcome(text=f"No results for {query!r}. Answer from your own knowledge.", info=info)
        body = results_text(hits, self.searcher.config.max_result_chars)
        return ToolOutcome(text=f"Today is {today()}. Results for {query!r}:\n{body}", info=info)

"""``enable_search`` / ``search_options`` as a feature of the tool loop (spec §4.8; docs/search.md): its request
rules, the forced search placed before the last user message, the reserved ``search`` tool, and the page
reader that agent_max uses through the media fetcher's SSRF guard."""

from __future__ import annotations

import logging
from dataclasses import replace

from qwenhost.core.errors import NotSupported, ServeError
from qwenhost.core.events import ToolReport
from qwenhost.core.types import ChatRequest, Message, SearchOptions
from qwenhost.media.fetch import Fetcher
from qwenhost.service.tool_loop import Offer
from qwenhost.tools.search.documents import html_text
from qwenhost.tools.search.searcher import PageReader, Searcher, SearchTool, results_text, search_info, today

log = logging.getLogger("qwenhost.search")

UNSUPPORTED = "This model does not support enable_search."  # DashScope's words [ERR]; no usable provider here
AGENT_STRATEGIES = ("agent", "agent_max")
EXTENSION_NOTE = "search_options.enable_search_extension: no vertical-domain sources here; the [search] chain answers"


class SearchFeature:
    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher

    def is_asked(self, request: ChatRequest) -> bool:
        return request.enable_search

    def admit(self, request: ChatRequest) -> ChatRequest:
        if not self.searcher.usable():
            raise NotSupported(UNSUPPORTED)
        return replace(request, enable_search=False)

    async def offer(self, request: ChatRequest) -> Offer:
        """forced_search: one search now, its results a system block right before the last user message
        (the history before it stays byte-identical: the prefix cache still hits). The model is offered the
        tool unless the forced search was all the strategy allows (turbo, max)."""
        options = request.search_options or SearchOptions()
        strategy = options.search_strategy
        calls = self.searcher.config.agent_calls if strategy in AGENT_STRATEGIES else 1
        tool = SearchTool(self.searcher, strategy)
        notes = (EXTENSION_NOTE,) if options.enable_search_extension else ()
        at = next((i for i in range(len(request.messages) - 1, -1, -1) if request.messages[i].role == "user"), None)
        if not options.forced_search or at is None:
            return Offer(tool=tool, max_calls=calls, messages=request.messages, notes=notes)
        query = request.messages[at].text()
        hits = await self.searcher.search(query, strategy)
        report = ToolReport("search", {"query": query, "search_results": search_info(hits)})
        messages = request.messages
        if hits:
            block = Message(
                role="system", content=forced_block(query, results_text(hits, self.searcher.config.max_result_chars))
            )
            messages = (*messages[:at], block, *messages[at:])
        log.info("forced search (%s): %d results placed before the last user message", strategy, len(hits))
        left = calls - 1
        tool_left = tool if left > 0 else None
        return Offer(tool=tool_left, max_calls=left, messages=messages, reports=(report,), notes=notes)


def forced_block(query: str, results: str) -> str:
    return (
        f"Today is {today()}. Web search results for the user's next message ({query[:120]!r}):\n{results}\n\n"
        "Answer from these results where they are relevant and cite them as [n]; otherwise answer from your "
        "own knowledge."
    )


def page_reader(fetcher: Fetcher) -> PageReader:
    """agent_max's page reads: the media fetcher's address checks, redirects and size cap; HTML made text."""

    async def read(url: str, max_bytes: int) -> str | None:
        try:
            data = await fetcher.fetch_page(url, max_bytes)
        except ServeError as exc:  # media errors are ServeErrors: refused address, too large, failed
            log.info("agent_max: page %s not read (%s)", url, exc)
            return None
        raw = data.decode("utf-8", errors="replace")
        return html_text(raw)[1] if "<" in raw[:1000] else raw

    return read

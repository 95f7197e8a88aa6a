"""SearXNG, Brave and Tavily against a loopback fake that answers with their real JSON shapes: hits, the
one retry, failures and timeouts becoming empty results (never an exception)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from qwenhost.tools.search.config import SearchConfig
from qwenhost.tools.search.remote import BraveProvider, SearxngProvider, TavilyProvider
from qwenhost.tools.search.searcher import Searcher
from tests.support.search_fakes import FakeSearch, fake_search


@pytest.fixture
def fake() -> Iterator[FakeSearch]:
    with fake_search() as f:
        yield f


def providers(fake: FakeSearch, timeout_s: float = 2.0) -> dict[str, object]:
    return {
        "searxng": SearxngProvider(fake.url, timeout_s),
        "brave": BraveProvider(fake.url, "brave-key", timeout_s),
        "tavily": TavilyProvider(fake.url, "tvly-key", timeout_s),
    }


@pytest.mark.parametrize("name", ["searxng", "brave", "tavily"])
def test_each_provider_reads_its_shape(fake: FakeSearch, name: str) -> None:
    provider = providers(fake)[name]
    hits = asyncio.run(provider.search("capybara", k=5))  # type: ignore[attr-defined]
    assert hits and hits[0].title == f"Fake result from {name.capitalize() if name != 'searxng' else 'SearXNG'}"
    assert hits[0].url.startswith("https://") and hits[0].snippet and hits[0].source == name
    asked = fake.requests[-1]
    if name == "searxng":
        assert asked["query"] == {"q": ["capybara"], "format": ["json"]}
    elif name == "brave":
        assert asked["headers"]["X-Subscription-Token"] == "brave-key" and asked["query"]["q"] == ["capybara"]
    else:
        assert asked["json"]["query"] == "capybara" and asked["headers"]["Authorization"] == "Bearer tvly-key"


def test_k_caps_the_hits(fake: FakeSearch) -> None:
    assert len(asyncio.run(BraveProvider(fake.url, "k", 2.0).search("q", k=1))) == 1


def test_a_5xx_is_retried_once(fake: FakeSearch) -> None:
    fake.fail = [503]
    assert asyncio.run(SearxngProvider(fake.url, 2.0).search("q", k=5))
    assert len(fake.requests) == 2


def test_two_failures_are_an_empty_result_and_a_log_line(fake: FakeSearch, caplog: pytest.LogCaptureFixture) -> None:
    fake.fail = [500, 500]
    assert asyncio.run(TavilyProvider(fake.url, "k", 2.0).search("q", k=5)) == []
    assert len(fake.requests) == 2 and "tavily failed: HTTP 500" in caplog.text


def test_a_4xx_is_not_retried(fake: FakeSearch) -> None:
    fake.fail = [403]  # SearXNG without json in search.formats
    assert asyncio.run(SearxngProvider(fake.url, 2.0).search("q", k=5)) == []
    assert len(fake.requests) == 1


def test_a_timeout_is_an_empty_result(fake: FakeSearch, caplog: pytest.LogCaptureFixture) -> None:
    fake.delay_s = 1.0
    assert asyncio.run(BraveProvider(fake.url, "k", 0.2).search("q", k=5)) == []
    assert "brave failed" in caplog.text and "Timeout" in caplog.text


def test_unreachable_provider_is_an_empty_result() -> None:
    assert asyncio.run(SearxngProvider("http://127.0.0.1:9", 1.0).search("q", k=5)) == []


def test_the_chain_fails_over_and_max_merges(fake: FakeSearch) -> None:
    dead = SearxngProvider("http://127.0.0.1:9", 1.0)
    brave, tavily = BraveProvider(fake.url, "k", 2.0), TavilyProvider(fake.url, "k", 2.0)
    unusable = BraveProvider(fake.url, None, 2.0)  # no key: skipped, never asked
    searcher = Searcher([unusable, dead, brave, tavily], SearchConfig())
    turbo = asyncio.run(searcher.search("q", "turbo"))
    assert {h.source for h in turbo} == {"brave"}
    merged = asyncio.run(searcher.search("q", "max"))
    assert [h.source for h in merged] == ["brave", "tavily", "brave"]  # each provider's best first
    assert len({h.url for h in merged}) == len(merged)


def test_agent_max_reads_the_top_pages_through_the_injected_reader(fake: FakeSearch) -> None:
    read: list[tuple[str, int]] = []

    async def reader(url: str, max_bytes: int) -> str | None:
        read.append((url, max_bytes))
        return None if url.endswith("/b") else f"the whole page of {url}"

    searcher = Searcher([BraveProvider(fake.url, "k", 2.0)], SearchConfig(pages=2, page_bytes=1000), reader)
    hits = asyncio.run(searcher.search("q", "agent_max"))
    assert read == [("https://brave.example/a", 1000), ("https://brave.example/b", 1000)]
    assert hits[0].snippet == "the whole page of https://brave.example/a" and hits[1].snippet == "more"
    assert asyncio.run(searcher.search("q", "agent"))[0].snippet == "Brave <b>says</b> hi."  # agent reads no page

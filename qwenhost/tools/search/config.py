"""[search]: the provider chain, the local index's file, each remote provider's address and key, and the bounds
(docs/search.md). Read by qwenhost/config.py; strict: unknown keys are refused there."""

from __future__ import annotations

from dataclasses import dataclass

PROVIDERS = ("local", "searxng", "brave", "tavily")
DEFAULT_INDEX = "~/.local/share/qwenhost/search-index.sqlite3"


@dataclass(frozen=True, slots=True)
class SearchConfig:
    enabled: bool = True  # false: enable_search is refused as DashScope refuses it for an unsupported model
    providers: tuple[str, ...] = ("local",)  # the failover chain: the first usable one with hits answers
    index_path: str = DEFAULT_INDEX  # the local provider's SQLite file (`qwenhost index add` fills it)
    searxng_url: str | None = None  # e.g. http://127.0.0.1:8888 (the instance must allow format=json)
    brave_url: str = "https://api.search.brave.com"
    brave_api_key: str | None = None  # or QWENHOST_BRAVE_API_KEY
    tavily_url: str = "https://api.tavily.com"
    tavily_api_key: str | None = None  # or QWENHOST_TAVILY_API_KEY
    timeout_s: float = 5.0  # one HTTP attempt; one retry follows a transport error or a 5xx
    max_results: int = 5  # hits per search (turbo, agent)
    max_results_max: int = 8  # hits of the "max" strategy, merged from every usable provider
    max_result_chars: int = 6000  # the results text given to the model, at most
    agent_calls: int = 3  # searches of the agent strategies, at most
    page_bytes: int = 200_000  # agent_max: each page read, at most
    pages: int = 2  # agent_max: top pages read per search
    # The loop every server-side tool shares (service/tool_loop.py).
    max_rounds: int = 4
    total_timeout_s: float = 120.0
    keepalive_s: float = 5.0

    def problems(self) -> list[str]:
        """What is wrong with these values, as ``key: problem`` (config.py names the file)."""
        out = [
            f"providers: unknown provider {p!r} (known: {', '.join(PROVIDERS)})"
            for p in self.providers
            if p not in PROVIDERS
        ]
        if len(set(self.providers)) != len(self.providers):
            out.append("providers: a provider is listed twice")
        for key in ("max_results", "max_results_max", "max_result_chars", "page_bytes", "max_rounds"):
            if getattr(self, key) < 1:
                out.append(f"{key}: must be at least 1")
        for key in ("agent_calls", "pages"):
            if getattr(self, key) < 0:
                out.append(f"{key}: must be 0 or more")
        for key in ("timeout_s", "total_timeout_s", "keepalive_s"):
            if getattr(self, key) <= 0:
                out.append(f"{key}: must be more than 0")
        return out

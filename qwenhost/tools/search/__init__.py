"""Web search for ``enable_search`` (docs/search.md): providers (a local SQLite FTS5 index of the operator's
documents, SearXNG, Brave, Tavily), their failover chain, and the strategies that use them."""

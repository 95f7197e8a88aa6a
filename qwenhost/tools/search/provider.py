"""What a search provider is: a query in, ranked hits out; a provider never raises for a failed search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Hit:
    title: str
    url: str
    snippet: str
    published: str | None = None
    source: str = ""  # the provider's name

    @property
    def site_name(self) -> str:
        return urlsplit(self.url).hostname or self.source


class SearchProvider(Protocol):
    @property
    def name(self) -> str: ...

    def is_usable(self) -> bool:
        """Configured well enough to be asked (a key, a base URL, an index file that exists)."""
        ...

    async def search(self, query: str, *, k: int) -> list[Hit]:
        """At most ``k`` hits, best first; a failure is an empty list and a log line, never an exception."""
        ...

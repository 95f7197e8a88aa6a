"""``oss://`` media URLs: the port through which the fetcher reads the local upload store, and the
per-request switch that ``X-DashScope-OssResourceResolve: enable`` turns on (spec §1.3, §2.5; compat §3.3).

The switch is a context variable because the header is a property of the HTTP request, set at the edge
(api/oss_header.py) and read here, and nothing between them (the domain request, the service) should
carry transport headers. Every task a request's media fetching creates inherits it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import BinaryIO, Protocol

SCHEME = "oss://"
HEADER = "x-dashscope-ossresourceresolve"

# True only while the edge answers a request that carries X-DashScope-OssResourceResolve: enable.
OSS_RESOLVE: ContextVar[bool] = ContextVar("qwenhost_oss_resolve", default=False)


class ObjectSource(Protocol):
    """Where ``oss://<key>`` objects live (ops/uploads.py's ObjectStore, wired by main.py)."""

    def open_object(self, key: str) -> BinaryIO | None:
        """The live object ``key`` opened for reading, or None when there is none (unknown or expired)."""
        ...

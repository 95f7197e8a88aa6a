"""``oss://`` media URLs: the port through which the fetcher reads the local upload store (spec §1.3, §2.5;
compat §3.3). A request resolves them only when it carries ``X-DashScope-OssResourceResolve: enable``
(ChatRequest.resolve_oss, read by the edge)."""

from __future__ import annotations

from typing import BinaryIO, Protocol

SCHEME = "oss://"


class ObjectSource(Protocol):
    """Where ``oss://<key>`` objects live (ops/uploads.py's ObjectStore, wired by main.py)."""

    def open_object(self, key: str) -> BinaryIO | None:
        """The live object ``key`` opened for reading, or None when there is none (unknown or expired)."""
        ...

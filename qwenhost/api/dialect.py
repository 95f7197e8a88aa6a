"""What a wire protocol must provide to the chat route (routes/chat.py), and the DashScope request
headers both dialects read the same way (spec §5.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from qwenhost.core.errors import AsyncNotSupported, ServeError
from qwenhost.core.events import ChatEvent, FoldedAnswer
from qwenhost.core.types import ChatRequest
from qwenhost.service.job import Job

# Headers DashScope reads that have no effect here, each for a reason docs/compatibility.md gives:
# no content-moderation service exists on a self-hosted server; workspaces are a cloud-account notion.
INERT_HEADERS = ("X-DashScope-DataInspection", "X-DashScope-WorkSpace")


class WireOptions(Protocol):
    """A dialect's response options; ``ignored`` names what the request said that has no effect."""

    @property
    def ignored(self) -> tuple[str, ...]: ...


class StreamRenderer(Protocol):
    """One streaming request's framing: each event's bytes (or None), the end, and an in-band error."""

    def render(self, event: ChatEvent) -> bytes | None: ...

    def end(self) -> bytes: ...

    def error(self, exc: ServeError, request_id: str) -> bytes: ...


class Dialect(Protocol):
    """How one wire protocol reads a request and writes answers and errors."""

    def parse(self, body: Any, request: Request) -> tuple[ChatRequest, WireOptions]:
        """The domain request, and the wire's own response options (handed back to the renderers)."""
        ...

    def wants_stream(self, body: Any, request: Request) -> bool: ...

    def error_response(self, error: ServeError, request_id: str, *, is_sse: bool = False) -> Response: ...

    def stream_renderer(self, job: Job, wire: Any) -> StreamRenderer: ...

    def completion(self, answer: FoldedAnswer, job: Job, wire: Any) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class DashScopeHeaders:
    inert: tuple[str, ...]  # sent, and without effect here (x-qwenhost-ignored)
    resolve_oss: bool  # X-DashScope-OssResourceResolve: enable — oss:// media URLs name uploaded objects


def _enabled(request: Request, name: str) -> bool:
    return request.headers.get(name, "").strip().lower() == "enable"


def read_headers(request: Request) -> DashScopeHeaders:
    """Refuse ``X-DashScope-Async: enable`` (403, as DashScope does for chat); read the others."""
    if _enabled(request, "x-dashscope-async"):
        raise AsyncNotSupported()
    inert = tuple(name for name in INERT_HEADERS if name.lower() in request.headers)
    return DashScopeHeaders(inert, resolve_oss=_enabled(request, "x-dashscope-ossresourceresolve"))

"""Compatible mode as a dialect of the chat route: OpenAI-shaped bodies, ``data:`` frames ending in
``[DONE]``, ``{"error": …}`` bodies (spec §2, §3)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from qwenhost.api.dialect import StreamRenderer, read_headers
from qwenhost.api.errors import error_body, error_response
from qwenhost.api.render import ChunkRenderer, completion_json
from qwenhost.api.sse import DONE, KEEP_ALIVE, frame
from qwenhost.api.wire.request import read_chat
from qwenhost.core.errors import ServeError
from qwenhost.core.events import ChatEvent, FoldedAnswer, KeepAlive, UsageReport
from qwenhost.core.types import ChatRequest
from qwenhost.service.job import Job


@dataclass(frozen=True, slots=True)
class CompatOptions:
    include_usage: bool  # stream_options.include_usage: a final usage chunk (streaming only)
    ignored: tuple[str, ...] = ()


class CompatStream:
    def __init__(self, job: Job, options: CompatOptions) -> None:
        self._renderer = ChunkRenderer(job.completion_id, job.model_name, job.created, is_thinking=job.is_thinking)
        self._include_usage = options.include_usage

    def render(self, event: ChatEvent) -> bytes | None:
        if isinstance(event, UsageReport) and not self._include_usage:
            return None
        if isinstance(event, KeepAlive):
            return KEEP_ALIVE
        chunk = self._renderer.render(event)
        return frame(chunk) if chunk is not None else None

    def end(self) -> bytes:
        return DONE

    def error(self, exc: ServeError, request_id: str) -> bytes:
        return frame(error_body(exc, request_id)) + DONE


class CompatDialect:
    def parse(self, body: Any, request: Request) -> tuple[ChatRequest, CompatOptions]:
        headers = read_headers(request)
        wire = read_chat(body)
        chat = replace(wire.request, resolve_oss=headers.resolve_oss)
        sse = ("X-DashScope-SSE",) if "x-dashscope-sse" in request.headers else ()  # `stream` decides here
        return chat, CompatOptions(wire.include_usage, wire.ignored + headers.inert + sse)

    def wants_stream(self, body: Any, request: Request) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def error_response(self, error: ServeError, request_id: str, *, is_sse: bool = False) -> Response:
        return error_response(error, request_id, is_sse=is_sse)

    def stream_renderer(self, job: Job, wire: Any) -> StreamRenderer:
        assert isinstance(wire, CompatOptions)
        return CompatStream(job, wire)

    def completion(self, answer: FoldedAnswer, job: Job, wire: Any) -> dict[str, Any]:
        return completion_json(answer, job.completion_id, job.model_name, job.created)

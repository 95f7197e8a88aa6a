"""The native dialect of the chat route (served at PREFIX + each path): request.py parses, render.py renders."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from qwenhost.api.dialect import StreamRenderer
from qwenhost.api.native.errors import native_error_response
from qwenhost.api.native.render import NativeStream, native_completion
from qwenhost.api.native.request import NativeOptions, parse_native, wants_stream
from qwenhost.core.errors import ServeError
from qwenhost.core.events import FoldedAnswer
from qwenhost.core.types import ChatRequest
from qwenhost.service.job import Job

TEXT_PATH = "/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/services/aigc/multimodal-generation/generation"


class NativeDialect:
    """``{model, input, parameters}`` in; ``{output, usage, request_id}`` and ``{code, message, request_id}`` out."""

    def __init__(self, *, multimodal: bool) -> None:
        self.multimodal = multimodal

    def parse(self, body: Any, request: Request) -> tuple[ChatRequest, Any]:
        return parse_native(body, request, multimodal=self.multimodal)

    def wants_stream(self, body: Any, request: Request) -> bool:
        return wants_stream(request)

    def error_response(self, error: ServeError, request_id: str, *, is_sse: bool = False) -> Response:
        return native_error_response(error, request_id, is_sse=is_sse)

    def stream_renderer(self, job: Job, wire: Any) -> StreamRenderer:
        assert isinstance(wire, NativeOptions)
        return NativeStream(job, wire)

    def completion(self, answer: FoldedAnswer, job: Job, wire: Any) -> dict[str, Any]:
        assert isinstance(wire, NativeOptions)
        return native_completion(answer, job, wire)

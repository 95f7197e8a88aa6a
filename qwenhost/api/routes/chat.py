"""POST /chat/completions: parse, prepare (errors before the first byte), then stream or fold run()."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from qwenhost.api.convert import parse_chat_request
from qwenhost.api.errors import dumps, error_body, error_response
from qwenhost.api.render import ChunkRenderer, completion_json
from qwenhost.api.sse import DONE, frame
from qwenhost.core import ids
from qwenhost.core.errors import BadRequestBody, InternalError, ServeError
from qwenhost.core.events import ChatEvent, UsageReport, afold
from qwenhost.ops.metrics import Metrics, RequestObserver
from qwenhost.service.chat import ChatService, Job

log = logging.getLogger("qwenhost.api")


async def _read_json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequestBody() from None


def _wants_stream(body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True


class ChatRoute:
    def __init__(self, service: ChatService, metrics: Metrics | None) -> None:
        self.service = service
        self.metrics = metrics

    async def handle(self, request: Request) -> Response:
        request_id = ids.new_request_id()
        observer = RequestObserver(self.metrics, request_id, request.scope.get("state", {}).get("key_id"))
        body: Any = None
        try:
            body = await _read_json(request)
            chat = parse_chat_request(body)
            observer.model, observer.stream = chat.model, chat.stream
            job = await self.service.aprepare(chat, request_id=request_id, key_id=observer.key_id)
        except ServeError as exc:
            observer.close(exc.status, None, exc.message)
            return error_response(exc, request_id, is_sse=_wants_stream(body))
        events = self.service.run(job)
        if chat.stream:
            return await self._stream(job, events, observer)
        return await self._complete(job, events, observer, request)

    async def _stream(self, job: Job, events: AsyncIterator[ChatEvent], observer: RequestObserver) -> Response:
        try:
            first = await anext(events)  # queueing errors still get their HTTP status
        except ServeError as exc:
            await _close(job, events)
            observer.close(exc.status, None, exc.message)
            return error_response(exc, job.request_id, is_sse=True)
        return StreamingResponse(
            self._sse(job, first, events, observer),
            media_type="text/event-stream",
            headers={"x-request-id": job.request_id, "cache-control": "no-cache"},
            background=BackgroundTask(_close, job, events),  # also when the body never started
        )

    async def _sse(
        self, job: Job, first: ChatEvent, events: AsyncIterator[ChatEvent], observer: RequestObserver
    ) -> AsyncIterator[bytes]:
        renderer = ChunkRenderer(job.completion_id, job.model_name, job.created, is_thinking=job.is_thinking)
        status, error, usage = 200, None, None
        try:
            event: ChatEvent | None = first
            while event is not None:
                observer.on_event(event)
                if isinstance(event, UsageReport):
                    usage = event.usage
                if job.request.include_usage or not isinstance(event, UsageReport):
                    chunk = renderer.render(event)
                    if chunk is not None:
                        yield frame(chunk)
                event = await anext(events, None)
            yield DONE
        except ServeError as exc:  # after the stream started: one in-band error frame (spec §3.1, §7.5)
            status, error = exc.status, exc.message
            yield frame(error_body(exc, job.request_id))
            yield DONE
        except Exception as exc:
            log.exception("stream %s failed", job.request_id)
            status, error = 500, repr(exc)
            yield frame(error_body(InternalError(), job.request_id))
            yield DONE
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            observer.close(status if error else 200, usage, error)

    async def _complete(
        self, job: Job, events: AsyncIterator[ChatEvent], observer: RequestObserver, request: Request
    ) -> Response:
        async def fold() -> Any:
            async def observed() -> AsyncIterator[ChatEvent]:
                async for event in events:
                    observer.on_event(event)
                    yield event

            return await afold(observed())

        try:
            answer = await _unless_disconnected(fold(), request)
        except ServeError as exc:
            observer.close(exc.status, None, exc.message)
            return error_response(exc, job.request_id)
        finally:
            await _close(job, events)
        if answer is None:  # the client left; run() was cancelled and its sequences freed
            observer.close(499, None, "client disconnected")  # run() was cancelled before its UsageReport
            return Response(status_code=499)
        observer.close(200, answer.usage)
        payload = completion_json(answer, job.completion_id, job.model_name, job.created)
        return Response(dumps(payload), media_type="application/json", headers={"x-request-id": job.request_id})


async def _close(job: Job, events: AsyncIterator[ChatEvent]) -> None:
    """Abort the engine's work if it is still running and give its reservation back (idempotent)."""
    try:
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        job.close()


async def _unless_disconnected(work: Any, request: Request) -> Any:
    """Run ``work`` but cancel it when the client disconnects (non-streaming requests, spec §4.12)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None

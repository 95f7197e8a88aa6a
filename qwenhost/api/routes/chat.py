"""POST /chat/completions: read and check the body, prepare (errors before the first byte), then stream or
fold run(). A client that leaves is noticed at every stage, and its job is closed at once. The wire side
(parsing, rendering, error bodies) is a Dialect, so the native protocol (api/native/) shares this pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from qwenhost.api.body import parse_json, read_body, refuse_unencodable
from qwenhost.api.dialect import Dialect, WireOptions
from qwenhost.api.errors import dumps
from qwenhost.api.notes import note_headers
from qwenhost.api.options import FAULT_HEADER, EdgeOptions
from qwenhost.api.team import TeamHook
from qwenhost.core import ids
from qwenhost.core.errors import InternalError, InvalidParameter, ServeError, ServiceUnavailable
from qwenhost.core.events import ChatEvent, UsageReport, afold
from qwenhost.core.types import Usage
from qwenhost.ops.lifecycle import SHUTDOWN_MESSAGE, Lifecycle
from qwenhost.ops.metrics import Metrics, RequestObserver
from qwenhost.service.chat import ChatService, Job

log = logging.getLogger("qwenhost.api")

CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection: logged, never received
_LEFT = object()  # what _unless_disconnected returns when the client left first


class ChatRoute:
    def __init__(
        self,
        service: ChatService,
        metrics: Metrics | None,
        options: EdgeOptions,
        lifecycle: Lifecycle,
        dialect: Dialect,
        team: TeamHook | None = None,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.options = options
        self.lifecycle = lifecycle
        self.dialect = dialect
        self.team = team  # keys' models, rate limits and the usage ledger (api/team.py); None: none of them

    async def handle(self, request: Request) -> Response:
        request_id = ids.new_request_id()
        observer = RequestObserver(self.metrics, request_id, request.scope.get("state", {}).get("key_id"))
        body: Any = None
        try:
            raw = await read_body(request, self.options.max_body_bytes)
            body = parse_json(raw)
            refuse_unencodable(raw, body)  # before anything else reads a string of it
            chat, wire = self.dialect.parse(body, request)
            observer.set_model(chat.model)
            observer.stream = chat.stream
            if self.team is not None:
                await self.team.admit(request, chat.model)
            if self.lifecycle.is_draining:
                raise ServiceUnavailable(SHUTDOWN_MESSAGE)
            fault = self._inject_fault(request)
            job = await self.service.aprepare(chat, request_id=request_id, key_id=observer.key_id, inject_fault=fault)
        except ServeError as exc:
            await self._finished(request, observer, exc.status, None, exc.message)
            return self.dialect.error_response(exc, request_id, is_sse=self.dialect.wants_stream(body, request))
        events = self.service.run(job)
        if chat.stream:
            return await self._stream(job, wire, events, observer, request)
        return await self._complete(job, wire, events, observer, request)

    async def _finished(
        self, request: Request, observer: RequestObserver, status: int, usage: Usage | None, error: str | None
    ) -> None:
        """An error answer: the ledger (when there is one) gets it, best effort; then metrics and the access log."""
        await self._ledger_error(request, observer, status, usage)
        observer.close(status, usage, error)

    async def _ledger_error(
        self, request: Request, observer: RequestObserver, status: int, usage: Usage | None
    ) -> None:
        """The ledger entry of an error (a failed write is logged: the answer is an error already)."""
        if self.team is not None:
            await self.team.record(request, observer, status, usage, durable=False)

    def _inject_fault(self, request: Request) -> bool:
        """The test seam: honoured only with ``[server] test_faults = true``; otherwise never looked at."""
        if not self.options.test_faults:
            return False
        value = request.headers.get(FAULT_HEADER)
        if value is None:
            return False
        if value != "sample":
            raise InvalidParameter(f"{FAULT_HEADER} must be 'sample', not {value!r}")
        return True

    async def _stream(
        self, job: Job, wire: WireOptions, events: AsyncIterator[ChatEvent], observer: RequestObserver, request: Request
    ) -> Response:
        # Queued or prefilling, the request has sent nothing yet: only watching the connection tells whether
        # the client is still there. Queueing errors still get their HTTP status.
        try:
            first = await _unless_disconnected(anext(events), request)
        except ServeError as exc:
            await _close(job, events)
            await self._finished(request, observer, exc.status, None, exc.message)
            return self.dialect.error_response(exc, job.request_id, is_sse=True)
        except Exception:
            await _close(job, events)
            log.exception("stream %s failed before its first event", job.request_id)
            await self._finished(request, observer, 500, None, "internal error")
            return self.dialect.error_response(InternalError(), job.request_id, is_sse=True)
        if first is _LEFT:
            await _close(job, events)
            await self._finished(request, observer, CLIENT_CLOSED, None, "client disconnected before the first event")
            return Response(status_code=CLIENT_CLOSED)
        return ClosingStreamingResponse(
            self._sse(job, wire, first, events, observer, request),
            on_close=lambda: _close(job, events),
            media_type="text/event-stream",
            headers={"x-request-id": job.request_id, "cache-control": "no-cache", **_notes(job, wire)},
        )

    async def _sse(
        self,
        job: Job,
        wire: Any,
        first: ChatEvent,
        events: AsyncIterator[ChatEvent],
        observer: RequestObserver,
        request: Request,
    ) -> AsyncIterator[bytes]:
        renderer = self.dialect.stream_renderer(job, wire)
        status, error, usage = 200, None, None
        recorded = self.team is None
        try:
            event: ChatEvent | None = first
            while event is not None:
                observer.on_event(event)
                if isinstance(event, UsageReport):
                    usage = event.usage
                    if self.team is not None:  # the last event: in the ledger before its frame and the end
                        recorded = True
                        await self.team.record(request, observer, 200, usage, durable=True)
                data = renderer.render(event)
                if data is not None:
                    yield data
                event = await anext(events, None)
            yield renderer.end()
        except ServeError as exc:  # after the stream started: one in-band error frame (spec §3.1, §7.5)
            status, error = exc.status, exc.message
            if not recorded:
                recorded = True
                await self._ledger_error(request, observer, status, usage)
            yield renderer.error(exc, job.request_id)
        except Exception as exc:
            log.exception("stream %s failed", job.request_id)
            status, error = 500, repr(exc)
            if not recorded:
                recorded = True
                await self._ledger_error(request, observer, status, usage)
            yield renderer.error(InternalError(), job.request_id)
        except BaseException:  # cancelled: the client left mid-stream (Starlette cancels the body)
            status, error = CLIENT_CLOSED, "client disconnected"
            if not recorded and self.team is not None:  # this handler is being cancelled: not awaited here
                self.team.record_later(request, observer, status, usage)
            raise
        finally:  # the engine's work is closed by ClosingStreamingResponse's hook, which always runs
            observer.close(status if error else 200, usage, error)

    async def _complete(
        self, job: Job, wire: WireOptions, events: AsyncIterator[ChatEvent], observer: RequestObserver, request: Request
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
            await self._finished(request, observer, exc.status, None, exc.message)
            return self.dialect.error_response(exc, job.request_id)
        finally:
            await _close(job, events)
        if answer is _LEFT:  # the client left; run() was cancelled before its UsageReport, its sequences freed
            await self._finished(request, observer, CLIENT_CLOSED, None, "client disconnected")
            return Response(status_code=CLIENT_CLOSED)
        if self.team is not None:
            try:  # in the ledger before the answer is sent: a completed request is never missing from it
                await self.team.record(request, observer, 200, answer.usage, durable=True)
            except ServeError as exc:
                observer.close(exc.status, None, exc.message)
                return self.dialect.error_response(exc, job.request_id)
        observer.close(200, answer.usage)
        payload = self.dialect.completion(answer, job, wire)
        headers = {"x-request-id": job.request_id, **_notes(job, wire)}
        return Response(dumps(payload), media_type="application/json", headers=headers)


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse whose close hook always runs: Starlette skips its background task when the client
    disconnects under ASGI spec 2.4 (ClientDisconnect is raised first), and the job must be closed anyway."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


def _notes(job: Job, wire: WireOptions) -> dict[str, str]:
    return note_headers(wire.ignored, job.notes)


async def _close(job: Job, events: AsyncIterator[ChatEvent]) -> None:
    """Abort the engine's work if it is still running and give its reservation back (idempotent)."""
    try:
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        job.close()


async def _unless_disconnected(work: Awaitable[Any], request: Request) -> Any:
    """``work``'s result, or _LEFT (``work`` cancelled) as soon as the client disconnects (spec §4.12)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled (shutdown): the work must not outlive it
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # nobody is left to answer
        await task
    return _LEFT

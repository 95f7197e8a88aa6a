"""The ingress's ASGI app: read the request, name its prefix for the router, hand it to an engine replica
and relay the replica's answer byte for byte (both dialects, auth and errors are the replica's own app).

A replica lost before its answer started is retried on another (a chat request has produced nothing yet,
so a retry is safe); one lost mid-stream ends the stream with the dialect's error event. No Ray here: the
call and the exceptions that mean "that replica is gone" are handed in by app.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from qwenhost.api.body import parse_json, read_body
from qwenhost.api.errors import dumps, error_body, error_response
from qwenhost.api.native.errors import PREFIX as NATIVE_PREFIX
from qwenhost.api.native.errors import native_error_body, native_error_response
from qwenhost.core import ids
from qwenhost.core.errors import ServeError, ServiceUnavailable
from qwenhost.deploy.ray.forward import ForwardedRequest, ResponseStart
from qwenhost.deploy.ray.policy import routing_text

log = logging.getLogger("qwenhost.deploy")

Call = Callable[[ForwardedRequest], AsyncIterator[ResponseStart | bytes]]
REPLICA_LOST = "The replica serving this request stopped; send the request again."


@dataclass(frozen=True, slots=True)
class IngressConfig:
    max_body_bytes: int = 64 * 1024 * 1024  # [server] max_body_bytes: the replica checks it again
    attempts: int = 4  # replicas tried for one request whose answer has not started
    retry_backoff_s: float = 0.5  # doubled after each lost replica (Serve needs a moment to notice a death)


class Ingress:
    def __init__(self, call: Call, retryable: tuple[type[BaseException], ...], config: IngressConfig) -> None:
        self.call = call
        self.retryable = retryable
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        native = NATIVE_PREFIX + "/" in scope["path"]
        try:
            request = await self._read(scope, receive)
        except ClientDisconnect:
            return
        except ServeError as error:
            await _refuse(error, native, scope, receive, send)
            return
        relay = asyncio.ensure_future(self._relay(request, native, scope, receive, send))
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait([relay, watcher], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, watcher):
                task.cancel()  # the client left: cancelling the relay cancels the replica's work (Serve)
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _read(self, scope: Scope, receive: Receive) -> ForwardedRequest:
        body = await read_body(Request(scope, receive), self.config.max_body_bytes)
        try:
            text = routing_text(parse_json(body)) if scope["method"] == "POST" else ""
        except ServeError:
            text = ""  # the replica answers a bad body in its dialect's envelope
        client = scope.get("client")
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # an app under a route_prefix: the replica's paths start at /
            path = path[len(root) :] or "/"
        return ForwardedRequest(
            method=scope["method"],
            path=path,
            query_string=scope.get("query_string", b""),
            headers=tuple((bytes(k), bytes(v)) for k, v in scope.get("headers", ())),
            body=body,
            routing_text=text,
            client=(str(client[0]), int(client[1])) if client else None,
        )

    async def _relay(self, request: ForwardedRequest, native: bool, scope: Scope, receive: Receive, send: Send) -> None:
        backoff_s = self.config.retry_backoff_s
        for attempt in range(1, self.config.attempts + 1):
            started: ResponseStart | None = None
            try:
                async for item in self.call(request):
                    if isinstance(item, ResponseStart):
                        started = item
                        await send({"type": "http.response.start", "status": item.status, "headers": item.headers})
                    else:
                        await send({"type": "http.response.body", "body": item, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            except self.retryable as exc:
                if started is not None:
                    log.warning("replica lost mid-answer (%s): ending the stream with an error event", exc)
                    await send(
                        {"type": "http.response.body", "body": _error_event(started, native), "more_body": False}
                    )
                    return
                log.warning("replica lost before answering (attempt %d of %d): %s", attempt, self.config.attempts, exc)
                await asyncio.sleep(backoff_s)
                backoff_s *= 2
        await _refuse(ServiceUnavailable(REPLICA_LOST), native, scope, receive, send)


def _error_event(started: ResponseStart, native: bool) -> bytes:
    """The dialect's final error event for a stream; a plain answer cut short just ends (nothing to add)."""
    content_type = dict(started.headers).get(b"content-type", b"")
    if not content_type.startswith(b"text/event-stream"):
        return b""
    error, request_id = ServiceUnavailable(REPLICA_LOST), ids.new_request_id()
    if native:
        data = dumps(native_error_body(error, request_id))
        return f"id:0\nevent:error\n:HTTP_STATUS/{error.status}\ndata:{data}\n\n".encode()
    return f"data: {dumps(error_body(error, request_id))}\n\ndata: [DONE]\n\n".encode()


async def _refuse(error: ServeError, native: bool, scope: Scope, receive: Receive, send: Send) -> None:
    request_id = ids.new_request_id()
    response = native_error_response(error, request_id) if native else error_response(error, request_id)
    await response(scope, receive, send)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

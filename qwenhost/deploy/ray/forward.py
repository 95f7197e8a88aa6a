"""One HTTP request carried from the ingress to an engine replica and answered there by the replica's own
qwenhost ASGI app, in process: the request as plain data, the answer as a stream of plain messages.

No Ray here: the ingress and the replica deployments (app.py) move these objects through Serve handles.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

# How long a replica's app gets, after the client has gone, to notice the disconnect itself (the stream
# ends and the engine aborts the request) before its task is cancelled outright.
DISCONNECT_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    """What the replica needs to answer, and ``messages``-like text for the prefix router (router.py reads
    ``routing_text`` off the handle call's first argument)."""

    method: str
    path: str
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    routing_text: str = ""
    client: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class ResponseStart:
    status: int
    headers: tuple[tuple[bytes, bytes], ...] = field(default_factory=tuple)


def asgi_scope(request: ForwardedRequest) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode("latin-1"),
        "root_path": "",
        "query_string": request.query_string,
        "headers": list(request.headers),
        "client": request.client,
        "server": None,
    }


async def answer(app: ASGIApp, request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
    """Run ``app`` on ``request``: first a ResponseStart, then the body's chunks. Closing the iterator
    early (the client left; Serve cancels the call) tells the app the client disconnected, so a stream
    ends and its engine work is aborted, then cancels the app if it has not finished in DISCONNECT_GRACE_S."""
    out: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=64)  # back-pressure: the app waits for us
    disconnected = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await out.put(message)

    async def run() -> None:
        try:
            await app(asgi_scope(request), receive, send)
        finally:
            await out.put(None)

    task = asyncio.ensure_future(run())
    try:
        while (message := await out.get()) is not None:
            if message["type"] == "http.response.start":
                yield ResponseStart(message["status"], tuple(message.get("headers", ())))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    yield bytes(message["body"])
                if not message.get("more_body", False):
                    break
    finally:
        disconnected.set()
        await _finish(task, out)


async def _finish(task: asyncio.Future[None], out: asyncio.Queue[Message | None]) -> None:
    """Let the app see the disconnect and end on its own (its sends are drained meanwhile), else cancel it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DISCONNECT_GRACE_S
    while not task.done() and loop.time() < deadline:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(out.get(), timeout=max(0.0, deadline - loop.time()))
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task

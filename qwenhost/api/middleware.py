"""The ASGI layers around the routes: the error guard, the in-flight count for graceful shutdown, and the
API-key check (ops/auth.py verifies keys; the edge alone shapes the error it answers)."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenhost.api.errors import error_response
from qwenhost.api.native.errors import PREFIX as NATIVE_PREFIX
from qwenhost.api.native.errors import native_error_response
from qwenhost.api.routes.web import ASSET_PATHS
from qwenhost.core import ids
from qwenhost.core.errors import InternalError, InvalidApiKey
from qwenhost.ops.auth import KeyStore, bearer_token
from qwenhost.ops.lifecycle import Lifecycle

log = logging.getLogger("qwenhost.api")

OPEN_PATHS = frozenset({"/health", "/metrics", "/"}) | ASSET_PATHS  # the page's files: the key is typed in it


class ErrorGuard:
    """An unexpected exception becomes a 500 envelope and goes no further.

    uvicorn closes the connection of an app that raises even when the answer was complete, and Starlette's
    ServerErrorMiddleware re-raises after sending its 500: the client's next request on that keep-alive
    connection was reset. Only an answer cut off midway still raises (closing is then the honest signal).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "complete": False}

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["complete"] = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            request_id = ids.new_request_id()
            log.error("unhandled error, request %s", request_id, exc_info=exc)
            if state["complete"]:
                return
            if state["started"]:
                raise
            await error_response(InternalError(), request_id)(scope, receive, send)


class InFlight:
    """Counts the API requests being answered (not /health or /metrics), so the drain knows when it is done."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        self.lifecycle.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.lifecycle.leave()


class AuthMiddleware:
    """With keys configured every API path needs ``Authorization: Bearer <key>``; without, any token passes."""

    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or not self.keys.is_enabled:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers", ()))
        key_id = self.keys.verify(token) if token else None
        if key_id is None:
            if scope["path"].startswith(NATIVE_PREFIX + "/"):  # the native protocol's own error body
                response = native_error_response(InvalidApiKey(), ids.new_request_id())
            else:
                response = error_response(InvalidApiKey(), ids.new_request_id())
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["key_id"] = key_id
        await self.app(scope, receive, send)

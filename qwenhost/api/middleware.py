"""The ASGI layers around the routes: the error guard, the in-flight count for graceful shutdown, and the
API-key check (ops/auth.py verifies keys; the edge alone shapes the error it answers)."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenhost.api.errors import error_response
from qwenhost.api.native.errors import PREFIX as NATIVE_PREFIX
from qwenhost.api.native.errors import native_error_response
from qwenhost.core import ids
from qwenhost.core.errors import InternalError, InvalidApiKey, ServeError
from qwenhost.ops.auth import Authenticator, KeyStore, bearer_token
from qwenhost.ops.lifecycle import Lifecycle

log = logging.getLogger("qwenhost.api")

OPEN_PATHS = frozenset({"/health", "/metrics", "/"})


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
    """Every API path needs ``Authorization: Bearer <key>`` once any key exists (static or in the store);
    with none, any token passes. The principal goes into ``scope["state"]``; headers a route leaves in
    ``state["response_headers"]`` (the rate-limit ones) are added to its answer."""

    def __init__(self, app: ASGIApp, keys: KeyStore, authenticator: Authenticator | None = None) -> None:
        self.app = app
        self.auth = authenticator or Authenticator(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.auth.authenticate(bearer_token(scope.get("headers", ())))
            if principal is None:
                raise InvalidApiKey()
        except ServeError as error:  # a bad key (401), or a store that cannot say (503)
            native = scope["path"].startswith(NATIVE_PREFIX + "/")  # the native protocol's own error body
            respond = native_error_response if native else error_response
            await respond(error, ids.new_request_id())(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if principal.source != "open":
            state["key_id"] = principal.name

        async def send_with_headers(message: Message) -> None:
            extra = state.get("response_headers")
            if message["type"] == "http.response.start" and extra:
                headers = list(message.get("headers", []))
                headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

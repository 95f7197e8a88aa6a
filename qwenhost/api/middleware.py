"""The ASGI layers around the routes: the replica header, the error guard, the in-flight count for graceful
shutdown, and the API-key check (ops/auth.py verifies keys; the edge alone shapes the error it answers)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenhost.api.body import parse_json, read_body
from qwenhost.api.errors import error_response
from qwenhost.api.native.errors import PREFIX as NATIVE_PREFIX
from qwenhost.api.native.errors import native_error_response
from qwenhost.api.routes.web import ASSET_PATHS
from qwenhost.core import ids
from qwenhost.core.errors import InternalError, InvalidApiKey, ServeError
from qwenhost.ops.auth import Authenticator, KeyStore, bearer_token
from qwenhost.ops.lifecycle import Lifecycle

log = logging.getLogger("qwenhost.api")

PROBE_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})
OPEN_PATHS = PROBE_PATHS | {"/"} | ASSET_PATHS  # the page's files: the key is typed in it
# Authorised by the signed upload policy in the form instead of a key (the SDK sends none; api/native/uploads.py).
SIGNED_PATHS = frozenset({"/oss-upload"})
AUTH_PEEK_BYTES = 1024 * 1024  # what a refused chat request's body is read for: only its "stream" flag


REPLICA_HEADER = "x-qwenhost-replica"


class ReplicaHeader:
    """Names the process that answered on every response (errors and probes too), so a client or a test
    behind a router can tell the replicas apart (docs/scale-out.md)."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode("latin-1"), replica_id.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


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


async def _refusal(error: ServeError, scope: Scope, receive: Receive) -> Response:
    """The native protocol's own body under /api/v1; in compatible mode a streaming request's refusal is
    SSE-formatted, as DashScope answers every error before a stream's first byte (spec §3.1)."""
    if scope["path"].startswith(NATIVE_PREFIX + "/"):
        return native_error_response(error, ids.new_request_id())
    return error_response(error, ids.new_request_id(), is_sse=await _asks_for_stream(scope, receive))


async def _asks_for_stream(scope: Scope, receive: Receive) -> bool:
    """Whether an unauthenticated chat request says ``"stream": true``: its body is read only up to
    AUTH_PEEK_BYTES (a larger one is answered in JSON), so a client without a key costs little."""
    if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
        return False
    try:
        body = parse_json(await read_body(Request(scope, receive), AUTH_PEEK_BYTES))
    except ServeError:
        return False
    return isinstance(body, dict) and body.get("stream") is True


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
        if scope["path"] in SIGNED_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.auth.authenticate(bearer_token(scope.get("headers", ())))
            if principal is None:
                raise InvalidApiKey()
        except ServeError as error:  # a bad key (401), or a store that cannot say (503)
            await (await _refusal(error, scope, receive))(scope, receive, send)
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

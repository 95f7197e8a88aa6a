"""create_app(): the Starlette application — routes under /compatible-mode/v1 and /v1, auth, errors."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qwenhost.api.errors import error_response
from qwenhost.api.routes.chat import ChatRoute
from qwenhost.api.routes.models import HealthRoute, ModelsRoute
from qwenhost.core import ids
from qwenhost.core.errors import InternalError, ServeError
from qwenhost.ops.auth import AuthMiddleware, KeyStore
from qwenhost.ops.metrics import Metrics
from qwenhost.service.chat import ChatService

log = logging.getLogger("qwenhost.api")
PREFIXES = ("/compatible-mode/v1", "/v1")


async def _method_not_allowed(request: Request) -> Response:
    error = ServeError(f"Request method '{request.method}' is not supported.", status=405, code="invalid_request_error")
    return error_response(error, ids.new_request_id())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return await _method_not_allowed(request)
    error = ServeError(
        str(exc.detail), status=exc.status_code, code="not_found" if exc.status_code == 404 else "invalid_request_error"
    )
    return error_response(error, ids.new_request_id())


async def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = ids.new_request_id()
    log.error("unhandled error, request %s", request_id, exc_info=exc)
    return error_response(InternalError(), request_id)


def create_app(service: ChatService, keys: KeyStore, metrics: Metrics | None = None) -> Starlette:
    chat = ChatRoute(service, metrics)
    models = ModelsRoute(service.registry)
    routes = [Route("/health", HealthRoute(service.registry).handle, methods=["GET"])]
    for prefix in PREFIXES:
        routes += [
            Route(f"{prefix}/chat/completions", chat.handle, methods=["POST"]),
            Route(f"{prefix}/models", models.list, methods=["GET"]),
            Route(f"{prefix}/models/{{model:path}}", models.get, methods=["GET"]),
        ]
    if metrics is not None:

        async def metrics_endpoint(request: Request) -> Response:
            return Response(metrics.render(), media_type="text/plain; version=0.0.4")

        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    return Starlette(
        routes=routes,
        middleware=[Middleware(AuthMiddleware, keys=keys)],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )

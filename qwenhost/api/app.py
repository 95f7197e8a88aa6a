"""create_app(): the Starlette application — compatible mode under /compatible-mode/v1 and /v1, the native
protocol under /api/v1, auth, errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qwenhost.api.errors import error_response
from qwenhost.api.middleware import AuthMiddleware, ErrorGuard, InFlight
from qwenhost.api.native.dialect import MULTIMODAL_PATH, TEXT_PATH, NativeDialect
from qwenhost.api.native.errors import PREFIX as NATIVE_PREFIX
from qwenhost.api.options import EdgeOptions
from qwenhost.api.routes.chat import ChatRoute
from qwenhost.api.routes.models import HealthRoute, ModelsRoute
from qwenhost.api.routes.web import WebRoute
from qwenhost.core import ids
from qwenhost.core.errors import ServeError
from qwenhost.ops.auth import KeyStore
from qwenhost.ops.lifecycle import Lifecycle
from qwenhost.ops.metrics import Metrics
from qwenhost.service.chat import ChatService

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


def create_app(
    service: ChatService,
    keys: KeyStore,
    metrics: Metrics | None = None,
    options: EdgeOptions | None = None,
    lifecycle: Lifecycle | None = None,
) -> Starlette:
    options = options or EdgeOptions()
    lifecycle = lifecycle or Lifecycle()
    chat = ChatRoute(service, metrics, options, lifecycle)
    models = ModelsRoute(service.registry)
    routes = [Route("/health", HealthRoute(service.registry, lifecycle).handle, methods=["GET"])]
    routes += WebRoute().routes()  # the playground page at / and its files under /web/
    for path, multimodal in ((TEXT_PATH, False), (MULTIMODAL_PATH, True)):
        native = ChatRoute(service, metrics, options, lifecycle, NativeDialect(multimodal=multimodal))
        routes.append(Route(NATIVE_PREFIX + path, native.handle, methods=["POST"]))
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
    # No handler for Exception: ErrorGuard answers unexpected errors itself, so that Starlette's
    # ServerErrorMiddleware never re-raises one into uvicorn (which would close the connection).

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await service.aclose()  # after the drain: the prepare pool, media fetcher and decoders

    return Starlette(
        lifespan=lifespan,
        routes=routes,
        middleware=[
            Middleware(ErrorGuard),
            Middleware(InFlight, lifecycle=lifecycle),
            Middleware(AuthMiddleware, keys=keys),
        ],
        exception_handlers={HTTPException: _http_error},
    )

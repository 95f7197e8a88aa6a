"""create_app(): the Starlette application — compatible mode under /compatible-mode/v1 and /v1, the native
protocol under /api/v1, auth, errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qwenhost.api.compat import CompatDialect
from qwenhost.api.errors import error_response
from qwenhost.api.middleware import AuthMiddleware, ErrorGuard, InFlight, ReplicaHeader
from qwenhost.api.native.dialect import MULTIMODAL_PATH, TEXT_PATH, NativeDialect
from qwenhost.api.native.errors import PREFIX as NATIVE_PREFIX
from qwenhost.api.native.errors import native_error_response
from qwenhost.api.native.uploads import POLICY_PATH, SINK_PATH, UploadRoutes
from qwenhost.api.options import EdgeOptions
from qwenhost.api.routes.chat import ChatRoute
from qwenhost.api.routes.models import HealthRoute, ModelsRoute
from qwenhost.api.routes.web import WebRoute
from qwenhost.api.team import TeamServices
from qwenhost.core import ids
from qwenhost.core.errors import ServeError
from qwenhost.ops.auth import KeyStore
from qwenhost.ops.lifecycle import Lifecycle
from qwenhost.ops.metrics import Metrics
from qwenhost.ops.uploads import ObjectStore
from qwenhost.service.chat import ChatService

PREFIXES = ("/compatible-mode/v1", "/v1")


def _is_native(request: Request) -> bool:
    path = request.url.path
    return path == NATIVE_PREFIX or path.startswith(NATIVE_PREFIX + "/")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods, in the envelope of the dialect the path belongs to."""
    assert isinstance(exc, HTTPException)
    native = _is_native(request)
    if exc.status_code == 405:
        message = f"Request method '{request.method}' is not supported."
        error = ServeError(message, status=405, code="invalid_request_error")
    elif exc.status_code == 404:
        error = ServeError(str(exc.detail), status=404, code="NotFound" if native else "not_found")
    else:
        error = ServeError(str(exc.detail), status=exc.status_code, code="invalid_request_error")
    if native:
        return native_error_response(error, ids.new_request_id())
    return error_response(error, ids.new_request_id())


def _chat_routes(
    service: ChatService, metrics: Metrics | None, options: EdgeOptions, lifecycle: Lifecycle, team: TeamServices | None
) -> list[Route]:
    """Both dialects' chat routes over the one service, and compatible mode's model list."""
    hook = team.hook if team is not None else None
    chat = ChatRoute(service, metrics, options, lifecycle, CompatDialect(), team=hook)
    models = ModelsRoute(service.registry)
    routes = []
    for path, multimodal in ((TEXT_PATH, False), (MULTIMODAL_PATH, True)):
        native = ChatRoute(service, metrics, options, lifecycle, NativeDialect(multimodal=multimodal), hook)
        routes.append(Route(NATIVE_PREFIX + path, native.handle, methods=["POST"]))
    for prefix in PREFIXES:
        routes += [
            Route(f"{prefix}/chat/completions", chat.handle, methods=["POST"]),
            Route(f"{prefix}/models", models.list, methods=["GET"]),
            Route(f"{prefix}/models/{{model:path}}", models.get, methods=["GET"]),
        ]
    return routes


def _metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return endpoint


def create_app(
    service: ChatService,
    keys: KeyStore,
    metrics: Metrics | None = None,
    options: EdgeOptions | None = None,
    lifecycle: Lifecycle | None = None,
    uploads: ObjectStore | None = None,
    team: TeamServices | None = None,
    replica_id: str | None = None,
) -> Starlette:
    options = options or EdgeOptions()
    lifecycle = lifecycle or Lifecycle()
    routes = _chat_routes(service, metrics, options, lifecycle, team)
    health = HealthRoute(service.registry, lifecycle)
    routes += [
        Route("/health", health.handle, methods=["GET"]),
        Route("/health/ready", health.ready, methods=["GET"]),
        Route("/health/live", health.live, methods=["GET"]),
    ]
    routes += WebRoute().routes()  # the playground page at / and its files under /web/
    if uploads is not None:  # the SDK's upload-policy flow for local files ([uploads] enabled)
        upload_routes = UploadRoutes(uploads, service.registry)
        routes.append(Route(NATIVE_PREFIX + POLICY_PATH, upload_routes.get_policy, methods=["GET"]))
        routes.append(Route(SINK_PATH, upload_routes.sink, methods=["POST"]))
    if team is not None:
        routes += team.admin.routes()
    if metrics is not None:
        routes.append(Route("/metrics", _metrics_endpoint(metrics), methods=["GET"]))
    # No handler for Exception: ErrorGuard answers unexpected errors itself, so that Starlette's
    # ServerErrorMiddleware never re-raises one into uvicorn (which would close the connection).

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await service.aclose()  # after the drain: the prepare pool, media fetcher and decoders
        if uploads is not None:
            uploads.close()  # a temporary upload directory goes with its objects

    return Starlette(
        lifespan=lifespan,
        routes=routes,
        middleware=[
            *([Middleware(ReplicaHeader, replica_id=replica_id)] if replica_id else []),
            Middleware(ErrorGuard),
            Middleware(InFlight, lifecycle=lifecycle),
            Middleware(AuthMiddleware, keys=keys, authenticator=team.authenticator if team else None),
        ],
        exception_handlers={HTTPException: _http_error},
    )

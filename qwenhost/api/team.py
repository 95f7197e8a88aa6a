"""The chat route's team hook: admission before prepare (model access, rate limits: their headers ride on
the answer through AuthMiddleware) and the ledger entry at the end, durable before a success's last bytes."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.requests import Request

from qwenhost.api.routes.admin import AdminRoutes
from qwenhost.core.errors import ServeError
from qwenhost.core.types import Usage
from qwenhost.ops.accounting import Accounting, entry_for
from qwenhost.ops.auth import Authenticator, principal_of
from qwenhost.ops.limits import RateLimited
from qwenhost.ops.metrics import RequestObserver
from qwenhost.service.models import ModelRegistry

log = logging.getLogger("qwenhost.api")

HEADERS_STATE = "response_headers"  # AuthMiddleware adds these to the answer's headers
MAX_LATE_WRITES = 256  # ledger writes of cancelled streams in the background, at most


class TeamHook:
    def __init__(self, accounting: Accounting, registry: ModelRegistry) -> None:
        self.accounting = accounting
        self.registry = registry
        self._late: set[asyncio.Task[None]] = set()

    async def admit(self, request: Request, requested: str) -> None:
        state = request.scope.setdefault("state", {})
        served = self.registry.resolve(requested).name  # an unknown model is a 404 before any counting
        state["served_model"] = served
        try:
            admission = await self.accounting.admit(principal_of(request.scope), requested, served)
        except RateLimited as exc:
            headers = exc.info.headers() if exc.info is not None else {}
            state[HEADERS_STATE] = {**headers, "retry-after": str(exc.retry_after_s)}
            raise
        state["limit_scopes"] = admission.scopes
        state[HEADERS_STATE] = admission.info.headers()

    async def record(
        self, request: Request, observer: RequestObserver, status: int, usage: Usage | None, *, durable: bool
    ) -> None:
        """``durable``: a success, whose answer must not be sent unrecorded, so a failure raises
        StoreUnavailable (503). Otherwise the answer is an error already: a failure is logged."""
        state = request.scope.get("state", {})
        entry = entry_for(
            observer.request_id,
            principal_of(request.scope),
            observer.model,
            state.get("served_model", "-"),
            status,
            observer.stream,
            usage,
            time.perf_counter() - observer.started_s,
        )
        try:
            await self.accounting.record(entry, state.get("limit_scopes", ()))
        except ServeError:
            if durable:
                raise
            log.error("request %s (status %d) is missing from the usage ledger", observer.request_id, status)

    def record_later(self, request: Request, observer: RequestObserver, status: int, usage: Usage | None) -> None:
        """For a stream the client left: its handler is being cancelled, so the write runs as its own task."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a generator finalized outside the loop: nothing can await the write
            loop = None
        if loop is None or len(self._late) >= MAX_LATE_WRITES:
            log.error("request %s is missing from the usage ledger: no room for its write", observer.request_id)
            return
        task = loop.create_task(self.record(request, observer, status, usage, durable=False))
        self._late.add(task)
        task.add_done_callback(self._late.discard)


@dataclass(frozen=True, slots=True)
class TeamServices:
    """What a server with a store adds to the edge: who a key is, the chat hook, the admin routes."""

    authenticator: Authenticator
    hook: TeamHook
    admin: AdminRoutes

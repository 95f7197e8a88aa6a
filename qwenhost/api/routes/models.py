"""GET /models (OpenAI list shape, spec §5.2) with each model's family and capabilities, and the health probes
(/health, /health/ready, /health/live; docs/scale-out.md "The worker contract")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwenhost.api.errors import error_response
from qwenhost.core import ids
from qwenhost.core.errors import ModelNotFound, ServiceUnavailable
from qwenhost.ops.lifecycle import SHUTDOWN_MESSAGE, Lifecycle
from qwenhost.service.models import ModelRegistry, ServedModel


def _entry(registry: ModelRegistry, name: str, model: ServedModel) -> dict[str, object]:
    """One name: the model answering it, its capabilities under the name's policy, and the policy itself
    (null values: the served model's own default; docs/models.md)."""
    _, spec = registry.spec(name)
    return {
        "id": name,
        "object": "model",
        "created": model.created,
        "owned_by": "qwenhost",
        "root": model.name,
        "capabilities": model.capabilities(spec),
        "policy": registry.policy(name).describe(),
    }


class ModelsRoute:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def list(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_entry(self.registry, n, m) for n, m in self.registry.names()]})

    async def get(self, request: Request) -> Response:
        name = request.path_params["model"]
        try:
            model = self.registry.resolve(name)
        except ModelNotFound as exc:
            return error_response(exc, ids.new_request_id())
        return JSONResponse(_entry(self.registry, name, model))


class HealthRoute:
    """The probes a load balancer, router or process manager reads (docs/scale-out.md).

    ``ready`` (and ``/health``, kept as it was): 200 while every engine serves; 503 with the envelope and the
    reason while draining or when an engine is not serving (stalled, stopped): send no new traffic.
    ``live``: 503 only when an engine is not serving, which a restart fixes; a draining process is live
    (restarting it would cut the streams it is finishing).
    """

    def __init__(self, registry: ModelRegistry, lifecycle: Lifecycle) -> None:
        self.registry = registry
        self.lifecycle = lifecycle

    async def handle(self, request: Request) -> Response:
        return self._answer(self.unhealthy_reason(), {"status": "ok", "models": [m.name for m in self.registry]})

    async def ready(self, request: Request) -> Response:
        return self._answer(self.unhealthy_reason(), {"status": "ready"})

    async def live(self, request: Request) -> Response:
        return self._answer(self.engine_fault(), {"status": "live", "draining": self.lifecycle.is_draining})

    def unhealthy_reason(self) -> str | None:
        if self.lifecycle.is_draining:
            return SHUTDOWN_MESSAGE
        return self.engine_fault()

    def engine_fault(self) -> str | None:
        reasons = [f"{m.name}: {reason}" for m in self.registry if (reason := m.backend.health()) is not None]
        return "; ".join(reasons) or None

    @staticmethod
    def _answer(reason: str | None, body: dict[str, object]) -> Response:
        if reason is not None:
            return error_response(ServiceUnavailable(reason), ids.new_request_id())
        return JSONResponse(body)

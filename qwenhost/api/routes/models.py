"""GET /models (OpenAI list shape, spec §5.2) with each model's family and capabilities, and /health."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwenhost.api.errors import error_response
from qwenhost.core import ids
from qwenhost.core.errors import ModelNotFound
from qwenhost.service.models import ModelRegistry, ServedModel


def _entry(name: str, model: ServedModel) -> dict[str, object]:
    return {
        "id": name,
        "object": "model",
        "created": model.created,
        "owned_by": "qwenhost",
        "root": model.name,
        "capabilities": model.capabilities(),
    }


class ModelsRoute:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def list(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_entry(n, m) for n, m in self.registry.names()]})

    async def get(self, request: Request) -> Response:
        name = request.path_params["model"]
        try:
            model = self.registry.resolve(name)
        except ModelNotFound as exc:
            return error_response(exc, ids.new_request_id())
        return JSONResponse(_entry(name, model))


class HealthRoute:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def handle(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": [m.name for m in self.registry]})

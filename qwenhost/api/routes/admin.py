"""The admin API under /admin/v1 (admin keys only; any other key gets 403 and learns nothing): keys in
the store (list, create, update, revoke) and the usage summary by key, model and day as JSON."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qwenhost.api.body import parse_json, read_body
from qwenhost.api.errors import dumps, error_response
from qwenhost.core import ids
from qwenhost.core.errors import InvalidParameter, ServeError
from qwenhost.ops.auth import AccessDenied, principal_of
from qwenhost.ops.store import keys as store_keys
from qwenhost.ops.store import ledger
from qwenhost.ops.store.keys import KeyStoreError
from qwenhost.ops.store.runner import AsyncStore

PREFIX = "/admin/v1"
MAX_ADMIN_BODY = 64 * 1024
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIELDS = {"admin": "is_admin", "models": "models", "rpm": "rpm", "tpm": "tpm"}

Handler = Callable[[Request], Awaitable[Any]]


class NotFound(ServeError):
    status = 404
    code = "not_found"


class AdminRoutes:
    def __init__(self, store: AsyncStore, static_names: list[str]) -> None:
        self.store = store
        self.static_names = static_names

    def routes(self) -> list[Route]:
        return [
            Route(f"{PREFIX}/keys", self._guard(self.list_keys), methods=["GET"]),
            Route(f"{PREFIX}/keys", self._guard(self.create_key, status=201), methods=["POST"]),
            Route(f"{PREFIX}/keys/{{name}}", self._guard(self.update_key), methods=["PATCH"]),
            Route(f"{PREFIX}/keys/{{name}}", self._guard(self.revoke_key), methods=["DELETE"]),
            Route(f"{PREFIX}/usage", self._guard(self.usage), methods=["GET"]),
        ]

    def _guard(self, handler: Handler, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            request_id = ids.new_request_id()
            try:
                if not principal_of(request.scope).is_admin:
                    raise AccessDenied()
                payload = await handler(request)
            except KeyStoreError as exc:
                message = str(exc)
                error: ServeError = (
                    NotFound(message) if message.startswith("no key named") else InvalidParameter(message)
                )
                return error_response(error, request_id)
            except ServeError as exc:
                return error_response(exc, request_id)
            return Response(dumps(payload), status, media_type="application/json", headers={"x-request-id": request_id})

        return endpoint

    async def list_keys(self, request: Request) -> Any:
        records = await self.store.call(store_keys.list_keys)
        data = [{**r.as_json(), "source": "store", "read_only": False} for r in records]
        data += [{"name": n, "source": "static", "read_only": True} for n in self.static_names]
        return {"object": "list", "data": data}

    async def create_key(self, request: Request) -> Any:
        changes = await _changes(request)
        name = changes.pop("name", None)
        if name is not None and not isinstance(name, str):
            raise InvalidParameter("name must be a string")
        record, plain = await self.store.call(_create, name, changes)
        return {**record.as_json(), "key": plain}  # the only time the key is ever shown

    async def update_key(self, request: Request) -> Any:
        changes = await _changes(request)
        if "name" in changes:
            raise InvalidParameter("a key's name cannot change; create a new key")
        return (await self.store.call(store_keys.update_key, request.path_params["name"], changes)).as_json()

    async def revoke_key(self, request: Request) -> Any:
        return (await self.store.call(store_keys.revoke_key, request.path_params["name"])).as_json()

    async def usage(self, request: Request) -> Any:
        bounds = [request.query_params.get(k) for k in ("since", "until")]
        for value in bounds:
            if value is not None and not DAY.fullmatch(value):
                raise InvalidParameter(f"since and until are days as YYYY-MM-DD, not {value!r}")
        rows = await self.store.call(ledger.summary, *bounds)
        return {"object": "list", "data": [r.as_json() for r in rows]}


def _create(engine: Any, name: str | None, changes: dict[str, Any]) -> tuple[store_keys.KeyRecord, str]:
    return store_keys.create_key(engine, name, **changes)


async def _changes(request: Request) -> dict[str, Any]:
    """The JSON body's fields as store fields: ``admin`` -> is_admin; ``name`` kept for create."""
    body = parse_json(await read_body(request, MAX_ADMIN_BODY))
    if not isinstance(body, dict):
        raise InvalidParameter("the body must be a JSON object")
    unknown = sorted(set(body) - {*_FIELDS, "name"})
    if unknown:
        raise InvalidParameter(f"unknown fields: {', '.join(unknown)} (known: name, {', '.join(_FIELDS)})")
    return {_FIELDS.get(str(k), str(k)): v for k, v in body.items()}

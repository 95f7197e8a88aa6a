"""API keys: stored as SHA-256 digests, compared in constant time; an ASGI middleware guards the API."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenhost.api.errors import error_response
from qwenhost.core import ids
from qwenhost.core.errors import InvalidApiKey

OPEN_PATHS = frozenset({"/health", "/metrics", "/"})


class KeyStore:
    def __init__(self, hashed: Sequence[tuple[str, str]]) -> None:
        self._keys = [(key_id, bytes.fromhex(digest)) for key_id, digest in hashed]

    @property
    def is_enabled(self) -> bool:
        return bool(self._keys)

    def verify(self, presented: str) -> str | None:
        """The key id of a valid key, else None. Every stored digest is compared (no early exit)."""
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found: str | None = None
        for key_id, stored in self._keys:
            if hmac.compare_digest(digest, stored) and found is None:
                found = key_id
        return found


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class AuthMiddleware:
    """With keys configured every API path needs ``Authorization: Bearer <key>``; without, any token passes."""

    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or not self.keys.is_enabled:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        key_id = self.keys.verify(token) if token else None
        if key_id is None:
            response = error_response(InvalidApiKey(), ids.new_request_id())
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["key_id"] = key_id
        await self.app(scope, receive, send)

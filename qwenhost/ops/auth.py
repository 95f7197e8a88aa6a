"""API keys: who a bearer token is (a Principal), from the static keys (file, env, config: SHA-256 digests
compared in constant time) or the store (looked up by digest on every request, so a revocation holds from
the next request on); the model-access and admin refusals. api/middleware.py guards the routes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwenhost.core.errors import ServeError
from qwenhost.ops.limits import Limit
from qwenhost.ops.store.keys import KeyRecord, find_key
from qwenhost.ops.store.runner import AsyncStore


class KeyStore:
    def __init__(self, hashed: Sequence[tuple[str, str]]) -> None:
        self._keys = [(key_id, bytes.fromhex(digest)) for key_id, digest in hashed]

    @property
    def is_enabled(self) -> bool:
        return bool(self._keys)

    @property
    def names(self) -> list[str]:
        return [key_id for key_id, _ in self._keys]

    def verify(self, presented: str) -> str | None:
        """The key id of a valid key, else None. Every stored digest is compared (no early exit)."""
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found: str | None = None
        for key_id, stored in self._keys:
            if hmac.compare_digest(digest, stored) and found is None:
                found = key_id
        return found


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a store key (with its role, models and limits), a static key, or nobody (open server)."""

    name: str
    source: str  # "store", "static" (key file, env, config) or "open" (no keys anywhere)
    key_id: int | None = None  # the store's row id
    is_admin: bool = False
    models: tuple[str, ...] | None = None  # None: every model
    limit: Limit = field(default_factory=Limit)

    def may_use(self, requested: str, served: str) -> bool:
        return self.models is None or requested in self.models or served in self.models

    @staticmethod
    def of(record: KeyRecord) -> Principal:
        limit = Limit(record.rpm, record.tpm)
        return Principal(record.name, "store", record.id, record.is_admin, record.models, limit)


OPEN = Principal("-", "open")


def principal_of(scope: Mapping[str, Any]) -> Principal:
    """The principal AuthMiddleware put in an ASGI scope (OPEN where it put none)."""
    principal = scope.get("state", {}).get("principal", OPEN)
    assert isinstance(principal, Principal)
    return principal


class ModelAccessDenied(ServeError):
    """403 for a key that may not use the model (spec §3.2: ``Model.AccessDenied``)."""

    status = 403
    code = "Model.AccessDenied"

    def __init__(self) -> None:
        super().__init__("Model access denied.")


class AccessDenied(ServeError):
    """403 for an admin endpoint asked with a key that is not an admin key (spec §3.2: ``access_denied``)."""

    status = 403
    code = "access_denied"

    def __init__(self) -> None:
        super().__init__("Access denied.")


class Authenticator:
    """Static keys first (no I/O), then the store. With no key anywhere the server is open (OPEN)."""

    def __init__(self, static: KeyStore, store: AsyncStore | None = None) -> None:
        self.static = static
        self.store = store

    async def authenticate(self, token: str | None) -> Principal | None:
        """The principal, or None for a missing or unknown key. Raises StoreUnavailable (503) when the
        store cannot answer: an unverifiable key is refused, not let through."""
        if token:
            key_id = self.static.verify(token)
            if key_id is not None:
                return Principal(key_id, "static")
        if self.store is None:
            return None if self.static.is_enabled else OPEN
        # A lookup by the digest of a high-entropy key: its timing says nothing usable about the key.
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest() if token else ""
        record, any_active = await self.store.call(find_key, digest)
        if record is not None:
            return Principal.of(record)
        return None if any_active or self.static.is_enabled else OPEN


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (raw ASGI header pairs), else None."""
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None

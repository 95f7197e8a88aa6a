"""API keys: stored as SHA-256 digests and compared in constant time (api/middleware.py guards the routes)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence


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


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (raw ASGI header pairs), else None."""
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None

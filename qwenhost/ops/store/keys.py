"""API keys in the store: created once (the plain key is returned, only its SHA-256 digest kept), listed,
updated and revoked by name; looked up by digest on every request (no cache: revocation is immediate)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from qwenhost.ops.store.database import read_only
from qwenhost.ops.store.schema import keys

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
CHANGEABLE = ("is_admin", "models", "rpm", "tpm")


class KeyStoreError(ValueError):
    """A key operation refused with a message for the operator (unknown name, duplicate, bad value)."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    name: str
    is_admin: bool
    models: tuple[str, ...] | None  # None: every model
    rpm: int | None
    tpm: int | None
    created_ms: int
    revoked_ms: int | None

    @property
    def is_active(self) -> bool:
        return self.revoked_ms is None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "admin": self.is_admin,
            "models": list(self.models) if self.models is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "created": self.created_ms // 1000,
            "revoked": self.revoked_ms // 1000 if self.revoked_ms is not None else None,
        }


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _record(row: sa.Row[Any]) -> KeyRecord:
    m = row._mapping
    models = tuple(json.loads(m["models"])) if m["models"] is not None else None
    return KeyRecord(
        m["id"], m["name"], bool(m["is_admin"]), models, m["rpm"], m["tpm"], m["created_ms"], m["revoked_ms"]
    )


def _checked(values: Mapping[str, Any]) -> dict[str, Any]:
    """Column values from changes: models as a JSON list (None: every model), limits positive or None."""
    unknown = sorted(set(values) - set(CHANGEABLE))
    if unknown:
        raise KeyStoreError(f"unknown key fields: {', '.join(unknown)} (known: {', '.join(CHANGEABLE)})")
    out: dict[str, Any] = {}
    for field, value in values.items():
        if field == "is_admin":
            if not isinstance(value, bool):
                raise KeyStoreError("admin must be true or false")
            out[field] = value
        elif field == "models":
            out[field] = _models_json(value)
        elif value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise KeyStoreError(f"{field} must be a positive integer or null (no limit), not {value!r}")
        else:
            out[field] = value
    return out


def _models_json(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) and v for v in value):
        raise KeyStoreError("models must be a non-empty list of model names, or null for every model")
    return json.dumps(sorted(set(value)))


def create_key(engine: Engine, name: str | None = None, **values: Any) -> tuple[KeyRecord, str]:
    """A new key: its record and the plain key, which is shown once and never stored."""
    name = name or f"key-{secrets.token_hex(3)}"
    if not NAME.fullmatch(name):
        raise KeyStoreError(
            f"a key name is 1-64 letters, digits or . _ @ - (starting with a letter or digit), not {name!r}"
        )
    row = {"is_admin": False, "models": None, "rpm": None, "tpm": None, **_checked(values)}
    plain = "sk-" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if conn.execute(sa.select(keys.c.id).where(keys.c.name == name)).first() is not None:
            raise KeyStoreError(f"a key named {name} already exists")
        conn.execute(keys.insert().values(name=name, digest=digest_of(plain), created_ms=_now_ms(), **row))
        created = conn.execute(sa.select(keys).where(keys.c.name == name)).one()
    return _record(created), plain


def list_keys(engine: Engine) -> list[KeyRecord]:
    with read_only(engine.connect()) as conn, conn.begin():
        return [_record(r) for r in conn.execute(sa.select(keys).order_by(keys.c.name))]


def revoke_key(engine: Engine, name: str) -> KeyRecord:
    with engine.begin() as conn:
        _existing(conn, name)
        conn.execute(keys.update().where(keys.c.name == name, keys.c.revoked_ms.is_(None)).values(revoked_ms=_now_ms()))
        return _record(conn.execute(sa.select(keys).where(keys.c.name == name)).one())


def update_key(engine: Engine, name: str, changes: Mapping[str, Any]) -> KeyRecord:
    values = _checked(changes)
    with engine.begin() as conn:
        if _existing(conn, name).revoked_ms is not None:
            raise KeyStoreError(f"the key {name} is revoked; create a new one")
        if values:
            conn.execute(keys.update().where(keys.c.name == name).values(**values))
        return _record(conn.execute(sa.select(keys).where(keys.c.name == name)).one())


def find_key(engine: Engine, digest: str) -> tuple[KeyRecord | None, bool]:
    """The active key with this digest (None if there is none), and whether any active key exists at all
    (with none, and no file or env keys, the server is open). One read transaction, no write lock."""
    with read_only(engine.connect()) as conn, conn.begin():
        row = conn.execute(sa.select(keys).where(keys.c.digest == digest, keys.c.revoked_ms.is_(None))).first()
        if row is not None:
            return _record(row), True
        active = conn.execute(sa.select(keys.c.id).where(keys.c.revoked_ms.is_(None)).limit(1)).first()
        return None, active is not None


def has_active_keys(engine: Engine) -> bool:
    return find_key(engine, "")[1]


def _existing(conn: sa.Connection, name: str) -> KeyRecord:
    row = conn.execute(sa.select(keys).where(keys.c.name == name)).first()
    if row is None:
        raise KeyStoreError(f"no key named {name}")
    return _record(row)


def _now_ms() -> int:
    return int(time.time() * 1000)

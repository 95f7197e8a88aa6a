"""Opening the store: one SQLAlchemy engine for SQLite (a private file, WAL, synchronous=FULL) or
PostgreSQL (psycopg 3), with timeouts on every wait, migrated to the newest schema under a lock."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url

from qwenhost.core.errors import ServiceUnavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x7177_6E68  # "qwnh": the advisory lock PostgreSQL replicas take while migrating


class StoreUnavailable(ServiceUnavailable):
    """503: the key and usage store cannot be reached in time; the request is refused, never served unrecorded."""

    def __init__(self, reason: str = "") -> None:
        super().__init__("The key and usage store is unavailable, please try again later.")
        self.reason = reason


class StoreError(ValueError):
    """A store that cannot be opened as configured (bad URL, unwritable path)."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str  # sqlite:///<path> or postgresql://…
    timeout_s: float = 5.0  # connect, lock and statement waits
    pool_size: int = 8


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser()}"


def open_engine(settings: StoreSettings) -> Engine:
    """The engine, with the database created if it is a new SQLite file, and migrated to head."""
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url.database or "", settings)
    elif url.get_backend_name() == "postgresql":
        engine = _postgres_engine(url.set(drivername="postgresql+psycopg"), settings)
    else:
        raise StoreError(f"store url {url.render_as_string(hide_password=True)!r}: only sqlite:/// and postgresql://")
    migrate(engine)
    return engine


def _sqlite_engine(database: str, settings: StoreSettings) -> Engine:
    if not database or database == ":memory:":
        raise StoreError("the SQLite store needs a file path (a memory database would lose the ledger)")
    path = Path(database)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the database's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc}") from exc
    engine = sa.create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": settings.timeout_s, "check_same_thread": False},
        pool_size=settings.pool_size,
        pool_timeout=settings.timeout_s,
    )
    busy_ms = int(settings.timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin event below emits BEGIN itself
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer. synchronous=FULL: a commit is on disk (fsync of the WAL)
        # before it returns, so a ledger row committed before the answer's last bytes survives a SIGKILL
        # (NORMAL would too) and a power cut (NORMAL would not).
        for pragma in ("journal_mode=WAL", "synchronous=FULL", f"busy_timeout={busy_ms}", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN, so a transaction that reads then writes (admission)
        # cannot be overtaken between its read and its write; reads ask for DEFERRED.
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _postgres_engine(url: sa.URL, settings: StoreSettings) -> Engine:
    ms = int(settings.timeout_s * 1000)
    return sa.create_engine(
        url,
        connect_args={
            "connect_timeout": max(1, int(settings.timeout_s)),
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        },
        pool_size=settings.pool_size,
        pool_timeout=settings.timeout_s,
        pool_pre_ping=True,
    )


def migrate(engine: Engine) -> None:
    """Upgrade to the newest revision in one transaction; concurrent starters wait for each other
    (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock held until commit). DDL is transactional on both."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-start INFO lines say nothing to an operator
    from alembic import command  # imported here, after the level is set: importing it logs
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def read_only(conn: Connection) -> Connection:
    """A connection whose transactions do not take SQLite's write lock (a no-op on PostgreSQL)."""
    return conn.execution_options(sqlite_begin="DEFERRED")

"""The store's tables as SQLAlchemy Core metadata: the queries use them; migrations/ creates them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),  # SHA-256 hex of the key; never the key
    sa.Column("is_admin", sa.Boolean(), nullable=False),
    sa.Column("models", sa.Text(), nullable=True),  # JSON list of names; NULL: every model
    sa.Column("rpm", sa.Integer(), nullable=True),
    sa.Column("tpm", sa.Integer(), nullable=True),
    sa.Column("created_ms", sa.BigInteger(), nullable=False),
    sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
)

usage = sa.Table(
    "usage_ledger",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("key_name", sa.String(64), nullable=False),
    sa.Column("key_id", sa.BigInteger(), nullable=True),  # api_keys.id for database keys; NULL for file/env keys
    sa.Column("model", sa.String(128), nullable=False),  # the served model
    sa.Column("alias", sa.String(200), nullable=False),  # the name the client sent
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("stream", sa.Boolean(), nullable=False),
    sa.Column("prompt_tokens", sa.Integer(), nullable=False),
    sa.Column("cached_tokens", sa.Integer(), nullable=False),
    sa.Column("completion_tokens", sa.Integer(), nullable=False),
    sa.Column("reasoning_tokens", sa.Integer(), nullable=False),
    sa.Column("media_tokens", sa.Integer(), nullable=False),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
    sa.Column("finished_ms", sa.BigInteger(), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),  # UTC YYYY-MM-DD: grouping by day is the same SQL everywhere
    sa.Index("ix_usage_ledger_day_key_model", "day", "key_name", "model"),
)

# One row per limited scope (a key, or a key on one model): fixed one-minute windows for requests and
# tokens, and a one-second window for bursts. Admission locks the rows it reads (see limits.py).
windows = sa.Table(
    "rate_windows",
    metadata,
    sa.Column("scope", sa.String(400), primary_key=True),
    sa.Column("minute_start", sa.BigInteger(), nullable=False),
    sa.Column("minute_requests", sa.Integer(), nullable=False),
    sa.Column("minute_tokens", sa.BigInteger(), nullable=False),
    sa.Column("second_start", sa.BigInteger(), nullable=False),
    sa.Column("second_requests", sa.Integer(), nullable=False),
)

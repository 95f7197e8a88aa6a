"""The first schema: api_keys, usage_ledger and rate_windows."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("models", sa.Text(), nullable=True),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "usage_ledger",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("key_name", sa.String(64), nullable=False),
        sa.Column("key_id", sa.BigInteger(), nullable=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=False),
        sa.Column("media_tokens", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("finished_ms", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
    )
    op.create_index("ix_usage_ledger_day_key_model", "usage_ledger", ["day", "key_name", "model"])
    op.create_table(
        "rate_windows",
        sa.Column("scope", sa.String(400), primary_key=True),
        sa.Column("minute_start", sa.BigInteger(), nullable=False),
        sa.Column("minute_requests", sa.Integer(), nullable=False),
        sa.Column("minute_tokens", sa.BigInteger(), nullable=False),
        sa.Column("second_start", sa.BigInteger(), nullable=False),
        sa.Column("second_requests", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_windows")
    op.drop_index("ix_usage_ledger_day_key_model", table_name="usage_ledger")
    op.drop_table("usage_ledger")
    op.drop_table("api_keys")

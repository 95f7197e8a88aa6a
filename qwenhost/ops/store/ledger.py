"""The usage ledger: one row per chat request (tokens by kind, key, model and alias, status, duration),
committed with its tokens' rate-window charge in one transaction; and the summary by key, model and day."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from qwenhost.ops.store.database import read_only
from qwenhost.ops.store.schema import usage
from qwenhost.ops.store.windows import add_tokens


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    request_id: str
    key_name: str
    key_id: int | None
    model: str
    alias: str
    status: int
    stream: bool
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    media_tokens: int = 0  # image + video + audio tokens of the prompt
    duration_ms: int = 0
    finished_ms: int = 0


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: str
    model: str
    day: str
    requests: int
    errors: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    media_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


def day_of(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def record(engine: Engine, entry: LedgerEntry, token_scopes: Sequence[str]) -> None:
    """Write the entry and charge its tokens, durably: the commit returns once the database has it."""
    finished_ms = entry.finished_ms or int(time.time() * 1000)
    values = {**asdict(entry), "finished_ms": finished_ms, "day": day_of(finished_ms)}
    with engine.begin() as conn:
        conn.execute(usage.insert().values(**values))
        add_tokens(conn, token_scopes, entry.prompt_tokens + entry.completion_tokens, finished_ms / 1000)


def summary(engine: Engine, since: str | None = None, until: str | None = None) -> list[UsageRow]:
    """Totals by key, model and UTC day (``since``/``until``: inclusive YYYY-MM-DD bounds)."""
    u = usage.c
    query = sa.select(
        u.key_name,
        u.model,
        u.day,
        sa.func.count(),
        sa.func.sum(sa.case((u.status >= 400, 1), else_=0)),
        *(sa.func.sum(c) for c in (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens)),
        sa.func.sum(u.media_tokens),
    ).group_by(u.key_name, u.model, u.day)
    if since:
        query = query.where(u.day >= since)
    if until:
        query = query.where(u.day <= until)
    query = query.order_by(u.day, u.key_name, u.model)
    with read_only(engine.connect()) as conn, conn.begin():
        return [UsageRow(*(r[:3]), *(int(v or 0) for v in r[3:])) for r in conn.execute(query)]


def entries(engine: Engine, limit: int = 1000) -> list[LedgerEntry]:
    """The newest entries, newest first (tests and debugging)."""
    names = [f.name for f in LedgerEntry.__dataclass_fields__.values()]
    with read_only(engine.connect()) as conn, conn.begin():
        rows = conn.execute(sa.select(*(usage.c[n] for n in names)).order_by(usage.c.id.desc()).limit(limit))
        return [LedgerEntry(*r) for r in rows]

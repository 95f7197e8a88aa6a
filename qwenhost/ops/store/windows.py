"""Rate-limit windows in the store: admission reads and updates every scope's row under a lock in one
transaction (PostgreSQL: SELECT … FOR UPDATE in scope order; SQLite: BEGIN IMMEDIATE), so replicas sharing
a database count together and nothing is lost across restarts. Tokens are added on completion."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from qwenhost.ops.limits import MINUTE, RateInfo, ScopeLimit, Window, refusal
from qwenhost.ops.store.schema import windows


def admit(engine: Engine, scopes: Sequence[ScopeLimit], now: float) -> RateInfo:
    """Count one request against every scope, or none of them: raises RateLimited (with the headers'
    RateInfo) when one scope refuses. ``scopes`` are locked in sorted order, so two admissions never
    wait for each other in a cycle."""
    info = RateInfo()
    if not scopes:
        return info
    with engine.begin() as conn:
        _ensure_rows(conn, [s.scope for s in scopes])
        seen: list[tuple[ScopeLimit, Window]] = []
        for limit in sorted(scopes, key=lambda s: s.scope):
            row = conn.execute(sa.select(windows).where(windows.c.scope == limit.scope).with_for_update()).one()
            window = Window(*row[1:]).at(now)
            info = info.tighter(limit, window, now)
            seen.append((limit, window))
        for limit, window in seen:
            refused = refusal(limit, window, now)
            if refused is not None:
                refused.info = info
                raise refused  # the transaction rolls back: no scope counted this request
        for limit, window in seen:
            after = window.admitted()
            conn.execute(
                windows.update()
                .where(windows.c.scope == limit.scope)
                .values(
                    minute_start=after.minute_start,
                    minute_requests=after.minute_requests,
                    minute_tokens=after.minute_tokens,
                    second_start=after.second_start,
                    second_requests=after.second_requests,
                )
            )
    # The headers count this request as spent.
    remaining = None if info.remaining_requests is None else info.remaining_requests - 1
    return RateInfo(info.limit_requests, remaining, info.limit_tokens, info.remaining_tokens, info.reset_s)


def add_tokens(conn: Connection, scopes: Sequence[str], tokens: int, now: float) -> None:
    """Charge a completed request's tokens to the current minute of each scope: one atomic UPDATE (a
    minute that has ended starts again from these tokens). Runs in the ledger's transaction."""
    if not scopes or tokens <= 0:
        return
    minute = int(now) // MINUTE * MINUTE
    same = windows.c.minute_start == minute
    conn.execute(
        windows.update()
        .where(windows.c.scope.in_(sorted(scopes)))
        .values(
            minute_tokens=sa.case((same, windows.c.minute_tokens + tokens), else_=tokens),
            minute_requests=sa.case((same, windows.c.minute_requests), else_=0),
            minute_start=minute,
        )
    )


def _ensure_rows(conn: Connection, scopes: Sequence[str]) -> None:
    rows = [
        {
            "scope": s,
            "minute_start": 0,
            "minute_requests": 0,
            "minute_tokens": 0,
            "second_start": 0,
            "second_requests": 0,
        }
        for s in scopes
    ]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(insert(windows).values(rows).on_conflict_do_nothing(index_elements=["scope"]))

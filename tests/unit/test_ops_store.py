"""The store on SQLite and on a real PostgreSQL: keys, rate windows and the ledger behave the same on both,
and survive a new engine (a restart)."""

# ruff: noqa: F811  (the store fixtures are imported; each test takes them by name)

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from qwenhost.ops.limits import (
    AllocationQuotaExceeded,
    BurstRateExceeded,
    Limit,
    LimitPolicy,
    RateQuotaExceeded,
    ScopeLimit,
)
from qwenhost.ops.store import keys, ledger, windows
from qwenhost.ops.store.database import StoreSettings, open_engine, sqlite_url
from qwenhost.ops.store.keys import KeyStoreError, digest_of
from qwenhost.ops.store.ledger import LedgerEntry
from tests.support.stores import pg_cluster, store_url  # noqa: F401  (fixtures)

# Mid-minute, so no test straddles a window's edge.
NOW = 1_800_000_000 // 60 * 60 + 20.5


def test_keys_lifecycle(store_url: str) -> None:
    engine = open_engine(StoreSettings(store_url))
    record, plain = keys.create_key(engine, "alice", models=["qwen-plus"], rpm=3)
    assert plain.startswith("sk-") and record.models == ("qwen-plus",) and record.rpm == 3 and not record.is_admin
    with engine.connect() as conn:  # only the digest is stored
        stored = conn.execute(sa.text("SELECT digest FROM api_keys")).scalar_one()
    assert stored == digest_of(plain) and plain not in stored
    with pytest.raises(KeyStoreError, match="already exists"):
        keys.create_key(engine, "alice")
    with pytest.raises(KeyStoreError, match="rpm must be a positive integer"):
        keys.create_key(engine, "bob", rpm=0)
    updated = keys.update_key(engine, "alice", {"models": None, "tpm": 500, "is_admin": True})
    assert updated.models is None and updated.tpm == 500 and updated.rpm == 3 and updated.is_admin
    assert keys.find_key(engine, digest_of(plain)) == (updated, True)
    keys.revoke_key(engine, "alice")
    assert keys.find_key(engine, digest_of(plain)) == (None, False)  # revoked, and no other active key
    with pytest.raises(KeyStoreError, match="no key named carol"):
        keys.revoke_key(engine, "carol")
    engine.dispose()
    again = open_engine(StoreSettings(store_url))  # a restart: migrations find the schema current
    assert [(r.name, r.is_active) for r in keys.list_keys(again)] == [("alice", False)]


def test_requests_per_minute_then_429_and_restart_keeps_count(store_url: str) -> None:
    engine = open_engine(StoreSettings(store_url))
    scopes = LimitPolicy(burst_factor=60).scopes("alice", Limit(rpm=3), "m")
    remaining = [windows.admit(engine, scopes, NOW + i * 0.1).remaining_requests for i in range(2)]
    assert remaining == [2, 1]
    engine.dispose()
    engine = open_engine(StoreSettings(store_url))
    assert windows.admit(engine, scopes, NOW + 0.3).remaining_requests == 0
    with pytest.raises(RateQuotaExceeded) as refused:
        windows.admit(engine, scopes, NOW + 0.4)
    assert refused.value.retry_after_s == 40 and refused.value.code == "Throttling.RateQuota"
    assert refused.value.info is not None and refused.value.info.headers()["x-ratelimit-remaining-requests"] == "0"
    assert windows.admit(engine, scopes, NOW + 60).remaining_requests == 2  # the next minute


def test_burst_and_tokens(store_url: str) -> None:
    engine = open_engine(StoreSettings(store_url))
    burst = [ScopeLimit("key:b", rpm=60, tpm=None, burst=2)]
    windows.admit(engine, burst, NOW)
    windows.admit(engine, burst, NOW + 0.1)
    with pytest.raises(BurstRateExceeded):
        windows.admit(engine, burst, NOW + 0.3)
    windows.admit(engine, burst, NOW + 0.5)  # the next second (NOW is half past one)
    tokens = [ScopeLimit("key:t", rpm=None, tpm=100, burst=None)]
    windows.admit(engine, tokens, NOW)
    entry = LedgerEntry("r-1", "t", None, "m", "m", 200, False, 60, completion_tokens=40, finished_ms=int(NOW * 1000))
    ledger.record(engine, entry, ["key:t"])  # 100 tokens: the minute's budget is spent
    with pytest.raises(AllocationQuotaExceeded) as refused:
        windows.admit(engine, tokens, NOW + 1)
    assert refused.value.type == "insufficient_quota"


def test_all_or_nothing_across_scopes(store_url: str) -> None:
    """A request refused by one scope is counted in none."""
    engine = open_engine(StoreSettings(store_url))
    wide = ScopeLimit("key:a", rpm=10, tpm=None, burst=None)
    narrow = ScopeLimit("key:a|model:m", rpm=1, tpm=None, burst=None)
    windows.admit(engine, [wide, narrow], NOW)
    for _ in range(3):
        with pytest.raises(RateQuotaExceeded):
            windows.admit(engine, [wide, narrow], NOW)
    assert windows.admit(engine, [wide], NOW).remaining_requests == 8  # 10 - the admitted one - this one


def test_concurrent_admissions_are_exact(store_url: str) -> None:
    """Threads (standing in for replicas) racing on one scope: exactly rpm requests get through."""
    engine = open_engine(StoreSettings(store_url))
    scope = [ScopeLimit("key:race", rpm=7, tpm=None, burst=None)]
    admitted: list[int] = []
    now = time.time()

    def worker() -> None:
        for _ in range(5):
            try:
                windows.admit(engine, scope, now)
                admitted.append(1)
            except RateQuotaExceeded:
                pass

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 7


def test_ledger_summary(store_url: str) -> None:
    engine = open_engine(StoreSettings(store_url))
    day_ms = int(NOW * 1000)
    rows = [
        LedgerEntry("a", "alice", 1, "m", "qwen-plus", 200, False, 10, 4, 5, 2, 3, 100, day_ms),
        LedgerEntry("b", "alice", 1, "m", "qwen-max", 200, True, 20, 0, 6, 0, 0, 100, day_ms),
        LedgerEntry("c", "alice", 1, "m", "qwen-plus", 429, False, finished_ms=day_ms),
        LedgerEntry("d", "bob", None, "m", "m", 200, False, 1, 0, 1, finished_ms=day_ms + 86_400_000),
    ]
    for row in rows:
        ledger.record(engine, row, [])
    summary = ledger.summary(engine)
    assert [(r.day, r.key, r.requests, r.errors, r.prompt_tokens, r.total_tokens) for r in summary] == [
        ("2027-01-15", "alice", 3, 1, 30, 41),
        ("2027-01-16", "bob", 1, 0, 1, 2),
    ]
    assert summary[0].cached_tokens == 4 and summary[0].reasoning_tokens == 2 and summary[0].media_tokens == 3
    assert [r.key for r in ledger.summary(engine, since="2027-01-16")] == ["bob"]


def test_sqlite_file_is_private_and_wal(tmp_path: Path) -> None:
    saved = os.umask(0)
    try:
        engine = open_engine(StoreSettings(sqlite_url(tmp_path / "new" / "q.db")))
    finally:
        os.umask(saved)
    assert stat.S_IMODE((tmp_path / "new" / "q.db").stat().st_mode) == 0o600
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL

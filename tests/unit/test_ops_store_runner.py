"""Store calls from async code: off the event loop, bounded in time and in number; failures are 503s."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from qwenhost.ops.store.database import StoreSettings, StoreUnavailable, open_engine, sqlite_url
from qwenhost.ops.store.runner import AsyncStore


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return open_engine(StoreSettings(sqlite_url(tmp_path / "q.db")))


def test_calls_run_off_the_loop(engine: Engine) -> None:
    store = AsyncStore(engine, timeout_s=5)

    async def main() -> str:
        return await store.call(lambda e: threading.current_thread().name)

    assert asyncio.run(main()).startswith("qwenhost-store")
    store.close()


def test_timeout_and_pending_bound(engine: Engine) -> None:
    store = AsyncStore(engine, timeout_s=0.2, max_pending=1)
    release = threading.Event()

    async def main() -> None:
        with pytest.raises(StoreUnavailable) as info:
            await store.call(lambda e: release.wait(5))
        assert info.value.status == 503 and info.value.code == "ServiceUnavailable"
        # The timed-out call still holds its thread: the next is refused at once, not queued.
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unavailable"):
            await store.call(lambda e: None)
        assert time.monotonic() - started < 0.1
        release.set()
        await asyncio.sleep(0.2)
        assert await store.call(lambda e: 7) == 7

    asyncio.run(main())
    store.close()


def test_database_errors_are_503(engine: Engine) -> None:
    store = AsyncStore(engine, timeout_s=5)

    def broken(e: Engine) -> None:
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    async def main() -> None:
        with pytest.raises(StoreUnavailable):
            await store.call(broken)

    asyncio.run(main())
    store.close()

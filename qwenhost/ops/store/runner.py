"""Store calls from async code: on a small pool of threads (never on the event loop), each bounded in
time, with a bounded number pending; any failure is StoreUnavailable (503), logged once with its cause."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from qwenhost.ops.store.database import StoreUnavailable

log = logging.getLogger("qwenhost.store")

T = TypeVar("T")


class AsyncStore:
    def __init__(self, engine: Engine, *, timeout_s: float, max_pending: int = 256, workers: int = 4) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="qwenhost-store")
        self._pending = 0
        self._lock = threading.Lock()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(engine, *args)`` on the pool. A call that has timed out still counts as pending until its
        thread returns (the database's own timeouts end it), so a stuck database cannot pile up threads."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise StoreUnavailable(f"{self._pending} store calls pending")
            self._pending += 1
        try:
            future: Future[T] = self._pool.submit(fn, self.engine, *args)
        except RuntimeError as exc:  # the pool is shut down
            self._done(None)
            raise StoreUnavailable(str(exc)) from None
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            log.error("store call %s took more than %.1fs", getattr(fn, "__name__", fn), self.timeout_s)
            raise StoreUnavailable("timeout") from None
        except SQLAlchemyError as exc:
            log.error("store call %s failed: %s", getattr(fn, "__name__", fn), exc)
            raise StoreUnavailable(type(exc).__name__) from None

    def _done(self, _: object) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()

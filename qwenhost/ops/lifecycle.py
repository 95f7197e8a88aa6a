"""Graceful shutdown: whether the server is draining, how many API requests are in flight, and the drain
itself (stop admitting, let in-flight requests finish up to a grace period, then cancel the rest)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from qwenhost.core.errors import ServeError, ServiceUnavailable

log = logging.getLogger("qwenhost")

SHUTDOWN_MESSAGE = "The server is shutting down."
# After cancel_all, how long the cancelled requests get to write their final event before the server stops
# waiting for them (uvicorn's own timeout_graceful_shutdown then closes what is left).
FLUSH_S = 5.0
_RECANCEL_S = 0.5


class Drainable(Protocol):
    """What the drain needs from each engine (engine/protocol.py Backend has both)."""

    def stop_admitting(self, error: ServeError) -> None: ...

    def cancel_all(self, error: ServeError) -> None: ...


class Lifecycle:
    """Shared by the HTTP edge (counts requests, answers 503 while draining) and the drain (waits for them).

    Used on the event loop only."""

    def __init__(self) -> None:
        self.is_draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float, hurry: asyncio.Event | None = None) -> bool:
        """True once no request is in flight; False when ``timeout_s`` passes (or ``hurry`` is set) first."""
        waiters = [asyncio.ensure_future(self._idle.wait())]
        if hurry is not None:
            waiters.append(asyncio.ensure_future(hurry.wait()))
        try:
            await asyncio.wait(waiters, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._idle.is_set()


async def drain(
    lifecycle: Lifecycle, engines: Sequence[Drainable], grace_s: float, hurry: asyncio.Event | None = None
) -> None:
    """Stop admitting (new requests get a 503 envelope), give in-flight requests ``grace_s`` to finish, then
    end the rest with a final error event; returns once every request has answered or FLUSH_S has passed."""
    error = ServiceUnavailable(SHUTDOWN_MESSAGE)
    lifecycle.is_draining = True
    for engine in engines:
        engine.stop_admitting(error)
    log.info("draining: %d request(s) in flight, waiting up to %.1f s", lifecycle.in_flight, grace_s)
    if await lifecycle.wait_idle(grace_s, hurry):
        return
    log.warning("grace period over: cancelling %d request(s) in flight", lifecycle.in_flight)
    deadline = time.monotonic() + FLUSH_S
    # Again and again: a request that reserved its room just before stop_admitting may reach its engine
    # only after the first cancel_all.
    while True:
        for engine in engines:
            engine.cancel_all(error)
        remaining = deadline - time.monotonic()
        if await lifecycle.wait_idle(min(_RECANCEL_S, remaining)) or remaining <= _RECANCEL_S:
            return

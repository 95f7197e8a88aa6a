"""The drain: stop admitting at once, wait for in-flight requests up to the grace, then cancel the rest."""

from __future__ import annotations

import asyncio

from qwenhost.core.errors import ServeError
from qwenhost.ops.lifecycle import SHUTDOWN_MESSAGE, Lifecycle, drain


class Engine:
    def __init__(self) -> None:
        self.refusal: ServeError | None = None
        self.cancels: list[ServeError] = []

    def stop_admitting(self, error: ServeError) -> None:
        self.refusal = error

    def cancel_all(self, error: ServeError) -> None:
        self.cancels.append(error)


def test_requests_that_finish_within_the_grace_are_not_cancelled() -> None:
    async def scenario() -> Engine:
        lifecycle, engine = Lifecycle(), Engine()
        lifecycle.enter()
        asyncio.get_running_loop().call_later(0.05, lifecycle.leave)
        await drain(lifecycle, [engine], grace_s=10)
        assert lifecycle.is_draining and lifecycle.in_flight == 0
        return engine

    engine = asyncio.run(scenario())
    assert engine.refusal is not None and engine.refusal.status == 503
    assert engine.refusal.message == SHUTDOWN_MESSAGE
    assert engine.cancels == []


def test_requests_past_the_grace_are_cancelled_until_they_answer() -> None:
    async def scenario() -> Engine:
        lifecycle, engine = Lifecycle(), Engine()
        lifecycle.enter()

        def cancel_all(error: ServeError) -> None:
            engine.cancels.append(error)
            if len(engine.cancels) == 2:  # a request that reached its engine after the first cancel_all
                lifecycle.leave()

        engine.cancel_all = cancel_all  # type: ignore[method-assign]
        await drain(lifecycle, [engine], grace_s=0.05)
        assert lifecycle.in_flight == 0
        return engine

    engine = asyncio.run(scenario())
    assert len(engine.cancels) == 2 and engine.cancels[0].code == "ServiceUnavailable"


def test_a_second_signal_cuts_the_grace_short() -> None:
    async def scenario() -> float:
        lifecycle, engine = Lifecycle(), Engine()
        lifecycle.enter()
        hurry = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, hurry.set)
        loop.call_later(0.1, lifecycle.leave)  # answers once cancelled
        started = loop.time()
        await drain(lifecycle, [engine], grace_s=60, hurry=hurry)
        assert engine.cancels
        return loop.time() - started

    assert asyncio.run(scenario()) < 30

"""The asyncio bridge and the watchdog, on an engine thread driven by a fake runner (no model loaded)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from qwenhost.core.errors import InternalError, ServeError, ServiceUnavailable
from qwenhost.engine.llamacpp.backend import EngineConfig, LlamaCppBackend, _Waiter
from qwenhost.engine.llamacpp.commands import Delivery
from qwenhost.engine.llamacpp.executor import EngineExecutor
from qwenhost.engine.llamacpp.loop import EngineLoop
from qwenhost.engine.llamacpp.runner import RunnerConfig
from qwenhost.engine.llamacpp.scheduler import Scheduler
from qwenhost.engine.protocol import GenerationRequest, StepOut
from tests.engine.fakes import Clock, FakeRunner, config, request, sampler_factory

WAIT_S = 10.0


class Bench:
    """A LlamaCppBackend whose engine loop runs on a fake runner and a fake clock."""

    def __init__(self, watchdog_s: float = 60.0) -> None:
        sched = config(num_slots=4, max_waiting=4)
        runner_config = RunnerConfig("unused.gguf", 4, None, 64, 1, 1, None)
        self.backend = LlamaCppBackend(EngineConfig(runner_config, sched, watchdog_s=watchdog_s))
        self.clock = Clock()
        self.runner = FakeRunner()
        _, make = sampler_factory(self.runner)
        executor = EngineExecutor(self.runner, Scheduler(sched, self.clock), make)
        # The seam: start() would load a model; the tests attach a loop over the fake runner instead.
        self.loop = EngineLoop(executor, self.backend._publish, clock=self.clock)
        self.backend._loop = self.loop
        self.loop.start()

    def close(self) -> None:
        if self.runner.gate is not None:
            self.runner.gate.set()
        self.loop.stop()


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()


async def collect(backend: LlamaCppBackend, r: GenerationRequest) -> list[object]:
    return [item async for item in backend.generate(r, backend.reserve(r.n))]


def test_each_request_is_answered_on_its_own_event_loop(bench: Bench) -> None:
    results: dict[str, list[object]] = {}

    def client(rid: str) -> None:  # one event loop per thread, as two servers in one process would have
        results[rid] = asyncio.run(collect(bench.backend, request(rid, [1, 2], max_new=3)))

    threads = [threading.Thread(target=client, args=(rid,)) for rid in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    for rid in ("x", "y"):
        last = results[rid][-1]
        assert isinstance(last, StepOut) and last.tokens[-1].finish == "length"
    assert bench.backend.admission.in_flight_requests == 0  # every reservation was released


def test_a_delivery_for_a_closed_event_loop_is_dropped_quietly(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    bench.backend._waiters["gone"] = _Waiter(closed, asyncio.Queue())
    with caplog.at_level(logging.WARNING, "qwenhost.engine"):
        bench.backend._publish([Delivery("gone", StepOut(())), Delivery("nobody", StepOut(()))])
    assert "event loop of their requests is closed" in caplog.text
    assert asyncio.run(collect(bench.backend, request("next", [1], max_new=1)))  # still serving


def test_the_fault_seam_fails_one_stream_with_a_500(bench: Bench) -> None:
    async def main() -> tuple[object, list[object]]:
        bad = asyncio.ensure_future(collect(bench.backend, request("bad", [1], max_new=2, inject_fault=True)))
        ok = await collect(bench.backend, request("ok", [1], max_new=2))
        try:
            await bad
            return None, ok
        except ServeError as exc:
            return exc, ok

    error, ok = asyncio.run(main())
    assert isinstance(error, InternalError) and error.status == 500
    assert isinstance(ok[-1], StepOut)


def test_the_watchdog_reports_a_stall_refuses_work_and_recovers() -> None:
    bench = Bench(watchdog_s=60.0)
    bench.runner.gate = threading.Event()
    try:
        assert bench.backend.health() is None

        async def main() -> list[object]:
            return await collect(bench.backend, request("stuck", [1, 2], max_new=1))

        waiting = threading.Thread(target=lambda: asyncio.run(main()))
        waiting.start()
        assert bench.runner.entered.wait(WAIT_S)
        bench.clock.now += 61
        reason = bench.backend.health()
        assert reason == "The engine has made no progress for 61 s with 1 request in flight."
        with pytest.raises(ServiceUnavailable, match="no progress for 61 s"):
            bench.backend.reserve(1)
        bench.runner.gate.set()
        waiting.join(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while bench.backend.health() is not None:
            assert time.monotonic() < deadline, bench.backend.health()
            time.sleep(0.01)
        bench.backend.reserve(1).release()
    finally:
        bench.close()


def test_a_dead_engine_thread_is_reported_and_refuses_work() -> None:
    bench = Bench()
    bench.runner.fail_decode = SystemExit("escapes every boundary")
    try:
        with pytest.raises(InternalError):
            asyncio.run(collect(bench.backend, request("a", [1], max_new=1)))
        bench.loop.stop(timeout_s=WAIT_S)
        assert bench.backend.health() == "The engine thread has stopped; see the server log."
        with pytest.raises(ServiceUnavailable, match="engine thread has stopped"):
            bench.backend.reserve(1)
    finally:
        bench.close()


def test_cancel_all_ends_each_stream_with_the_error(bench: Bench) -> None:
    gate = bench.runner.gate = threading.Event()
    error = ServiceUnavailable("The server is shutting down.")

    async def main() -> object:
        stream = asyncio.ensure_future(collect(bench.backend, request("long", [1], max_new=100)))
        while not bench.runner.entered.is_set():
            await asyncio.sleep(0.01)
        bench.backend.cancel_all(error)
        gate.set()
        try:
            await asyncio.wait_for(stream, WAIT_S)
        except ServeError as exc:
            return exc
        return None

    assert asyncio.run(main()) is error


def test_a_not_started_backend_is_unhealthy() -> None:
    sched = config()
    backend = LlamaCppBackend(EngineConfig(RunnerConfig("unused.gguf", 2, None, 64, 1, 1, None), sched))
    assert backend.health() == "The engine is not running."
    with pytest.raises(ServiceUnavailable):
        backend.reserve(1)

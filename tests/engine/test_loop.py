"""The engine thread with a fake runner: it outlives faults, stops cleanly, and keeps a heartbeat."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from qwenhost.core.errors import InternalError, ServeError, ServiceUnavailable
from qwenhost.engine.llamacpp.commands import Delivery
from qwenhost.engine.llamacpp.executor import EngineExecutor
from qwenhost.engine.llamacpp.loop import EngineLoop
from qwenhost.engine.llamacpp.scheduler import Scheduler
from qwenhost.engine.protocol import StepOut
from tests.engine.fakes import Clock, FakeRunner, config, request, sampler_factory

WAIT_S = 10.0  # generous: the machine may be busy; nothing here measures speed


class Inbox:
    """Collects deliveries from the engine thread; ``until_done`` waits for a request's last one."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Delivery] = queue.Queue()
        self.items: dict[str, list[object]] = {}

    def publish(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            self.queue.put(d)

    def until_done(self, request_id: str, n: int = 1) -> list[object]:
        deadline = time.monotonic() + WAIT_S
        while not self._is_done(request_id, n):
            d = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            self.items.setdefault(d.request_id, []).append(d.item)
        return self.items[request_id]

    def _is_done(self, request_id: str, n: int) -> bool:
        items = self.items.get(request_id, [])
        if items and isinstance(items[-1], ServeError):
            return True
        finished = sum(1 for i in items if isinstance(i, StepOut) for t in i.tokens if t.finish is not None)
        return finished >= n


class Engine:
    def __init__(self, clock: Clock | None = None, publish: object = None) -> None:
        self.runner = FakeRunner()
        _, make = sampler_factory(self.runner)
        self.clock = clock or Clock()
        self.executor = EngineExecutor(self.runner, Scheduler(config(num_slots=2), self.clock), make)
        self.inbox = Inbox()
        self.loop = EngineLoop(self.executor, publish or self.inbox.publish, clock=self.clock)  # type: ignore[arg-type]


@pytest.fixture
def engine() -> Iterator[Engine]:
    e = Engine()
    e.loop.start()
    yield e
    if e.runner.gate is not None:
        e.runner.gate.set()
    e.loop.stop()


def test_an_injected_fault_fails_only_its_request_and_the_thread_lives(engine: Engine) -> None:
    engine.loop.submit(request("bad", [1, 2], max_new=3, inject_fault=True))
    engine.loop.submit(request("ok", [5, 6], max_new=3))
    assert [type(i) for i in engine.inbox.until_done("bad")] == [InternalError]
    assert isinstance(engine.inbox.until_done("ok")[-1], StepOut)
    engine.loop.submit(request("after", [9], max_new=1))
    assert isinstance(engine.inbox.until_done("after")[-1], StepOut)
    assert engine.loop.is_alive


def test_stop_fails_what_is_left_with_shutting_down() -> None:
    e = Engine()
    e.runner.gate = threading.Event()
    e.loop.start()
    e.loop.submit(request("a", [1, 2], max_new=50))
    assert e.runner.entered.wait(WAIT_S)
    stopper = threading.Thread(target=e.loop.stop)
    stopper.start()
    e.runner.gate.set()  # the step in progress ends, then the loop reads Stop
    stopper.join(WAIT_S)
    last = e.inbox.until_done("a", n=99)[-1]
    assert isinstance(last, ServiceUnavailable) and last.message == "The server is shutting down."
    assert not e.loop.is_alive


def test_a_publish_that_raises_does_not_kill_the_thread() -> None:
    inbox = Inbox()
    calls = {"n": 0}

    def publish(deliveries: list[Delivery]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bridge broke")
        inbox.publish(deliveries)

    e = Engine(publish=publish)
    e.loop.start()
    try:
        e.loop.submit(request("lost", [1], max_new=1))
        time.sleep(0.2)
        e.loop.submit(request("ok", [3], max_new=2))
        assert isinstance(inbox.until_done("ok")[-1], StepOut)
        assert e.loop.is_alive
    finally:
        e.loop.stop()


def test_the_heartbeat_stops_while_a_step_is_wedged_and_resumes_after() -> None:
    clock = Clock()
    e = Engine(clock)
    e.runner.gate = threading.Event()
    e.loop.start()
    try:
        assert e.loop.seconds_without_progress() == 0.0  # idle is not stalled
        e.loop.submit(request("a", [1, 2], max_new=2))
        assert e.runner.entered.wait(WAIT_S)  # llama_decode "hangs"
        clock.now += 61
        assert e.loop.seconds_without_progress() >= 61
        e.runner.gate.set()
        e.inbox.until_done("a")
        deadline = time.monotonic() + WAIT_S
        while e.loop.seconds_without_progress() > 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        e.runner.gate.set()
        e.loop.stop()


def test_if_the_thread_dies_its_requests_fail_and_it_says_so() -> None:
    e = Engine()
    e.runner.fail_decode = SystemExit("not an Exception: passes every boundary")
    e.loop.start()
    e.loop.submit(request("a", [1], max_new=1))
    assert isinstance(e.inbox.until_done("a")[-1], InternalError)
    e.loop.stop(timeout_s=WAIT_S)
    assert not e.loop.is_alive


def test_a_request_submitted_after_the_thread_left_fails_at_once() -> None:
    e = Engine()
    e.loop.start()
    e.loop.stop()
    e.loop.submit(request("late", [1], max_new=1))
    last = e.inbox.until_done("late")[-1]
    assert isinstance(last, ServiceUnavailable)

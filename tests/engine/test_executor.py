"""The executor's fault boundaries, driven synchronously with a fake runner: a failure fails only the
requests it concerns, with the DashScope envelope, and the next requests are served."""

from __future__ import annotations

import pytest

from qwenhost.core.errors import CapacityExceeded, InternalError, ServeError, ServiceUnavailable
from qwenhost.core.types import SamplingParams
from qwenhost.engine.llamacpp.commands import Abort, CancelAll, Delivery, Submit
from qwenhost.engine.llamacpp.executor import EngineExecutor
from qwenhost.engine.llamacpp.plan import MemOp
from qwenhost.engine.llamacpp.runner import DecodeError, KvCacheFull
from qwenhost.engine.llamacpp.scheduler import Scheduler
from qwenhost.engine.protocol import GenerationRequest, PromptDone, StepOut
from tests.engine.fakes import Clock, FakeRunner, FakeSampler, config, next_token, request, sampler_factory


class Harness:
    def __init__(self, **overrides: object) -> None:
        self.clock = Clock()
        self.runner = FakeRunner()
        self.samplers, make = sampler_factory(self.runner)
        self.scheduler = Scheduler(config(**overrides), self.clock)
        self.executor = EngineExecutor(self.runner, self.scheduler, make)
        self.delivered: list[Delivery] = []

    def submit(self, *requests: GenerationRequest) -> None:
        for r in requests:
            self.executor.handle(Submit(r))
        self.delivered += self.executor.take_outbox()

    def run(self, max_steps: int = 100) -> None:
        for _ in range(max_steps):
            if not self.executor.has_work():
                return
            self.executor.step()
            self.delivered += self.executor.take_outbox()
        raise AssertionError("the engine did not finish its work")

    def items(self, request_id: str) -> list[object]:
        return [d.item for d in self.delivered if d.request_id == request_id]

    def tokens(self, request_id: str) -> list[int]:
        return [t.token_id for item in self.items(request_id) if isinstance(item, StepOut) for t in item.tokens]

    def error(self, request_id: str) -> ServeError:
        items = self.items(request_id)
        assert len(items) == 1 and isinstance(items[0], ServeError), items  # the error is all it got
        return items[0]


def assert_completed(h: Harness, request_id: str, first: int, count: int) -> None:
    items = h.items(request_id)
    assert isinstance(items[0], PromptDone)
    expected = [first]
    while len(expected) < count:
        expected.append(next_token(expected[-1]))
    assert h.tokens(request_id) == expected
    last = items[-1]
    assert isinstance(last, StepOut) and last.tokens[-1].finish == "length"


def test_a_request_runs_to_its_length() -> None:
    h = Harness()
    h.submit(request("a", [1, 2, 3], max_new=4))
    h.run()
    assert_completed(h, "a", first=4, count=4)
    assert all(s.is_freed for s in h.samplers) and all(slot.owner is None for slot in h.scheduler.slots)


def test_an_injected_fault_fails_only_its_request() -> None:
    h = Harness()
    h.submit(request("ok", [1, 2, 3], max_new=3), request("bad", [5, 6, 7], max_new=3, inject_fault=True))
    h.run()
    error = h.error("bad")  # no PromptDone either: the error is the whole answer (an HTTP 500 up front)
    assert isinstance(error, InternalError) and error.status == 500
    assert_completed(h, "ok", first=4, count=3)
    assert h.executor.stats.faults == 1
    assert all(s.is_freed for s in h.samplers) and all(slot.owner is None for slot in h.scheduler.slots)
    h.submit(request("next", [9], max_new=2))  # the engine goes on
    h.run()
    assert_completed(h, "next", first=10, count=2)


def test_an_explicit_cache_entry_that_finds_no_room_fails_only_its_request() -> None:
    h = Harness(num_slots=2)
    h.submit(request("a", [1, 2, 3, 4, 5, 6], max_new=2, pins=(5,)))
    h.run()  # "a" leaves an entry: a snapshot of its prompt's cells
    assert [p.tokens for p in h.scheduler.pins] == [[1, 2, 3, 4, 5]]
    h.runner.full_seq_ids = {1}  # "b" is restored into the empty slot 1, and the cache has no room there
    h.submit(request("b", [1, 2, 3, 4, 5, 9], max_new=2, pins=(5,)), request("c", [20, 21], max_new=2))
    h.run()
    assert isinstance(h.error("b"), CapacityExceeded)
    assert_completed(h, "c", first=22, count=2)
    assert all(slot.owner is None for slot in h.scheduler.slots) and h.scheduler.slots[1].tokens == []


class BreaksAfter:
    """A grammar that allows anything and breaks at its ``limit``-th token."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0

    def allowed_tokens(self) -> None:
        return None

    def consume(self, token_id: int) -> None:
        self.seen += 1
        if self.seen >= self.limit:
            raise ValueError("grammar state lost")

    def forced_tokens(self) -> list[int]:
        return []

    def is_finished(self) -> bool:
        return False


def test_a_fault_while_sampling_one_choice_fails_that_request_only() -> None:
    h = Harness(num_slots=4)
    limits = iter([5, 2])  # the second choice breaks at its second token, mid-decode

    broken = GenerationRequest(
        "n2",
        (1, 2),
        (SamplingParams(), SamplingParams()),
        10,
        constraint=lambda: BreaksAfter(next(limits)),
    )
    h.submit(broken, request("ok", [3, 4], max_new=4))
    h.run()
    items = h.items("n2")
    assert isinstance(items[-1], InternalError)  # what it streamed before the fault, then the error
    assert [type(i) for i in items[:-1]] == [PromptDone, StepOut]
    assert_completed(h, "ok", first=5, count=4)


def test_a_failing_decode_fails_the_requests_in_its_batch_and_drops_their_cells() -> None:
    h = Harness(num_slots=1)
    h.submit(request("a", [1, 2, 3], max_new=5), request("queued", [1, 2, 3, 9], max_new=2))
    h.executor.step()  # a's prompt is computed: its cells would be a cached prefix for "queued"
    h.runner.fail_decode = DecodeError("llama_decode returned -3")
    h.run()
    assert isinstance(h.items("a")[-1], InternalError)
    assert_completed(h, "queued", first=10, count=2)  # it was not in the batch: served afterwards
    assert h.executor.stats.cached_tokens == 0  # a's cells may be half-written: not reused
    assert MemOp("rm", 0) in h.runner.ops


def test_an_unexpected_exception_in_decode_is_contained_too() -> None:
    h = Harness()
    h.submit(request("a", [1], max_new=1))
    h.runner.fail_decode = ZeroDivisionError()
    h.run()
    assert isinstance(h.error("a"), InternalError)


def test_one_sequence_that_alone_overflows_the_cache_gets_503() -> None:
    h = Harness(num_slots=1)
    h.submit(request("huge", [1, 2], max_new=2))
    h.runner.fail_decode = KvCacheFull("no KV cells left")
    h.run()
    assert isinstance(h.error("huge"), CapacityExceeded)


def test_a_failing_submit_fails_that_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    real = h.scheduler.submit

    def submit(r: GenerationRequest) -> object:
        if r.request_id == "bad":
            raise KeyError("corrupt request")
        return real(r)

    monkeypatch.setattr(h.scheduler, "submit", submit)
    h.submit(request("bad", [1], max_new=1), request("ok", [1], max_new=1))
    h.run()
    assert isinstance(h.error("bad"), InternalError)
    assert_completed(h, "ok", first=2, count=1)


def test_a_grammar_that_cannot_start_fails_its_request_only() -> None:
    def broken() -> object:
        raise RuntimeError("schema did not compile")

    h = Harness()
    h.submit(
        GenerationRequest("g", (1, 2), (SamplingParams(),), 2, constraint=broken),  # type: ignore[arg-type]
        request("ok", [1, 2], max_new=2),
    )
    h.run()
    assert isinstance(h.error("g"), InternalError)
    assert_completed(h, "ok", first=3, count=2)


def test_cancel_all_ends_every_request_in_flight_with_its_error() -> None:
    h = Harness(num_slots=1)
    h.submit(request("running", [1, 2], max_new=50), request("queued", [3], max_new=5))
    h.executor.step()
    h.delivered += h.executor.take_outbox()
    shutting = ServiceUnavailable("The server is shutting down.")
    h.executor.handle(CancelAll(shutting))
    h.delivered += h.executor.take_outbox()
    for rid in ("running", "queued"):
        assert h.items(rid)[-1] is shutting
    assert not h.executor.has_work() and all(s.is_freed for s in h.samplers)


def test_abort_frees_the_decoders_and_the_slots() -> None:
    h = Harness(num_slots=1)
    h.submit(request("a", [1, 2], max_new=50))
    h.executor.step()
    h.executor.handle(Abort("a"))
    assert not h.executor.has_work() and h.scheduler.slots[0].owner is None
    sampler: FakeSampler = h.samplers[0]
    assert sampler.is_freed
    h.executor.handle(Abort("a"))  # aborting twice, or a finished request, is harmless


def test_a_queue_timeout_is_a_503() -> None:
    h = Harness(num_slots=1)
    h.submit(request("a", [1, 2], max_new=50), request("late", [3], max_new=1))
    h.executor.step()
    h.clock.now += 31
    h.executor.step()
    h.delivered += h.executor.take_outbox()
    assert isinstance(h.error("late"), CapacityExceeded)

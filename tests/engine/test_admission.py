"""Admission counts sequences against slots and requests against the waiting queue, atomically."""

from __future__ import annotations

import threading

import pytest

from qwenhost.core.errors import InvalidParameter, ServiceUnavailable, Throttled
from qwenhost.engine.admission import Admission


def test_sequences_fill_the_slots_then_requests_wait() -> None:
    a = Admission(num_slots=4, max_waiting=1)
    first = a.reserve(4)  # n = 4 takes every slot
    queued = a.reserve(1)  # waits
    with pytest.raises(Throttled):
        a.reserve(1)
    first.release()
    a.reserve(3)  # the queued one now runs in one slot; three more fit beside it
    a.reserve(1)  # the slots are full again: this one waits
    with pytest.raises(Throttled):
        a.reserve(1)
    queued.release()
    a.reserve(1)  # the waiting one moved up into the freed slot


def test_a_request_behind_a_waiting_one_waits_too() -> None:
    a = Admission(num_slots=4, max_waiting=2)
    a.reserve(3)
    a.reserve(2)  # does not fit: waits
    a.reserve(1)  # would fit the free slot, but the scheduler is first come, first served: waits
    with pytest.raises(Throttled):
        a.reserve(1)
    assert a.in_flight_requests == 3 and a.in_flight_sequences == 6


def test_release_is_idempotent() -> None:
    a = Admission(num_slots=1, max_waiting=0)
    r = a.reserve(1)
    r.release()
    r.release()
    assert a.in_flight_requests == 0
    a.reserve(1)


def test_n_beyond_the_slots_is_refused_as_a_parameter() -> None:
    with pytest.raises(InvalidParameter, match=r"Range of n should be \[1, 2\]"):
        Admission(num_slots=2, max_waiting=10).reserve(3)


def test_refusal_applies_until_lifted() -> None:
    a = Admission(num_slots=2, max_waiting=2)
    a.refuse(ServiceUnavailable("The server is shutting down."))
    with pytest.raises(ServiceUnavailable):
        a.reserve(1)
    a.refuse(None)
    a.reserve(1)


def test_concurrent_reservations_never_overshoot() -> None:
    a = Admission(num_slots=4, max_waiting=4)
    accepted: list[int] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        try:
            a.reserve(4)
            accepted.append(1)
        except Throttled:
            pass

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 5  # one runs, four wait

"""Admission: one atomic reserve/release of an engine's capacity, counted in sequences and waiting requests.

The engine thread never refuses what admission accepted: the scheduler's queue has no limit of its own,
it is bounded here. Thread-safe: the service reserves from worker threads and the event loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from itertools import count

from qwenhost.core.errors import InvalidParameter, ServeError, Throttled


class Admission:
    """``num_slots`` sequences run at once; beyond them at most ``max_waiting`` requests wait.

    Reservations are counted in arrival order, as the scheduler admits them (first come, first served,
    a request's ``n`` sequences together): a request waits when its sequences do not fit in the slots
    left after every earlier reservation, and so does every request after it.
    """

    def __init__(self, num_slots: int, max_waiting: int) -> None:
        self.num_slots = num_slots
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._held: OrderedDict[int, int] = OrderedDict()  # reservation id -> sequences, in arrival order
        self._ids = count()
        self._refusal: ServeError | None = None

    def reserve(self, num_seqs: int) -> Reservation:
        """Hold room for a request of ``num_seqs`` sequences, or raise at once (never wait)."""
        if not 1 <= num_seqs <= self.num_slots:
            raise InvalidParameter(f"Range of n should be [1, {min(4, self.num_slots)}]")
        with self._lock:
            if self._refusal is not None:
                raise self._refusal
            if self._waiting_after(num_seqs) > self.max_waiting:
                raise Throttled()
            key = next(self._ids)
            self._held[key] = num_seqs
        return Reservation(self, key, num_seqs)

    def refuse(self, error: ServeError | None) -> None:
        """From now on every reserve() raises ``error`` (draining, a stalled engine); None admits again."""
        with self._lock:
            self._refusal = error

    def _release(self, key: int) -> None:
        with self._lock:
            self._held.pop(key, None)

    def _waiting_after(self, num_seqs: int) -> int:
        """How many requests would wait if one of ``num_seqs`` sequences joined now (lock held)."""
        used, waiting = 0, 0
        for seqs in [*self._held.values(), num_seqs]:
            if waiting == 0 and used + seqs <= self.num_slots:
                used += seqs
            else:
                waiting += 1
        return waiting

    @property
    def in_flight_requests(self) -> int:
        return len(self._held)

    @property
    def in_flight_sequences(self) -> int:
        return sum(self._held.values())


class Reservation:
    """Room held for one request; released exactly once, by whoever finishes with it first."""

    __slots__ = ("_admission", "_key", "_released", "num_seqs")

    def __init__(self, admission: Admission, key: int, num_seqs: int) -> None:
        self._admission = admission
        self._key = key
        self.num_seqs = num_seqs
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self._key)

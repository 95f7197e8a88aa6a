"""EdgeOptions: the [server] keys the HTTP edge honours, handed down from main.py (docs/operations.md)."""

from __future__ import annotations

from dataclasses import dataclass

from qwenhost.api.body import DEFAULT_MAX_BODY_BYTES

# Test-only ([server] test_faults = true): ``sample`` makes the engine fail inside this request's first
# sampling step, so the chaos tests can prove that a fault fails only the request it concerns.
FAULT_HEADER = "x-qwenhost-test-fault"


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    test_faults: bool = False  # honour FAULT_HEADER; when false the header has no effect at all

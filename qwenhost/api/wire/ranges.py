"""The numeric request fields as one table: type, bounds and DashScope's message for each (spec §1.3, §3.3).

Both dialects read these fields under the same names (native ``parameters`` uses compatible mode's), so
one table serves both. A value of None (absent or JSON null) is "not set" for every row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from qwenhost.api.wire.values import is_int, is_number
from qwenhost.core.errors import AlgoInvalidParameter, InvalidParameter, InvalidValue, ServeError

SEED_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Bound:
    """One side of a range: the limit, whether the limit itself is excluded, and the refusal's text.

    The message may name ``{value}`` (the refused value, as an integer for integer fields)."""

    limit: float
    message: str
    is_open: bool = False

    def refuses(self, value: float, *, is_low: bool) -> bool:
        if is_low:
            return value <= self.limit if self.is_open else value < self.limit
        return value >= self.limit if self.is_open else value > self.limit


@dataclass(frozen=True, slots=True)
class Range:
    key: str
    kind: Literal["Float", "Integer"]
    low: Bound | None = None
    high: Bound | None = None
    error: type[ServeError] = InvalidParameter  # what an out-of-range value raises
    type_error: type[ServeError] = InvalidParameter  # what a value of the wrong type raises
    type_message: str | None = None  # DashScope's text for a wrong type, when it is not "'key' must be Kind"

    def read(self, body: Mapping[str, Any]) -> float | int | None:
        """The field's value, checked; None when absent or null."""
        value = body.get(self.key)
        if value is None:
            return None
        is_kind = is_number(value) if self.kind == "Float" else is_int(value)
        if not is_kind:
            raise self.type_error(self.type_message or f"'{self.key}' must be {self.kind}")
        number = float(value) if self.kind == "Float" else int(value)
        for bound, is_low in ((self.low, True), (self.high, False)):
            if bound is not None and bound.refuses(number, is_low=is_low):
                raise self.error(bound.message.format(value=number))
        return number


def between(
    low: float, high: float, message: str, *, low_open: bool = False, high_open: bool = False
) -> tuple[Bound, Bound]:
    """Both bounds of a range that DashScope refuses with one message."""
    return Bound(low, message, is_open=low_open), Bound(high, message, is_open=high_open)


TEMPERATURE = Range(
    "temperature",
    "Float",
    *between(0.0, 2.0, "Temperature should be in [0.0, 2.0)", high_open=True),
    error=AlgoInvalidParameter,
)
TOP_P = Range("top_p", "Float", *between(0.0, 1.0, "Range of top_p should be (0.0, 1.0]", low_open=True))
PRESENCE_PENALTY = Range("presence_penalty", "Float", *between(-2.0, 2.0, "Presence_penalty should be in [-2.0, 2.0]"))
FREQUENCY_PENALTY = Range(
    "frequency_penalty", "Float", *between(-2.0, 2.0, "Frequency_penalty should be in [-2.0, 2.0]")
)
REPETITION_PENALTY = Range(
    "repetition_penalty", "Float", low=Bound(0.0, "Repetition_penalty should be greater than 0.0", is_open=True)
)
TOP_K = Range("top_k", "Integer", low=Bound(0, "Parameter top_k be greater than or equal to 0"))
SEED = Range(
    "seed",
    "Integer",
    low=Bound(0, "{value} is lesser than the minimum of 0 - 'seed'"),
    high=Bound(SEED_MAX, "{value} is greater than the maximum of " + str(SEED_MAX) + " - 'seed'"),
    error=InvalidValue,
    type_error=InvalidValue,
)
N = Range("n", "Integer", *between(1, 4, "Range of n should be [1, 4]"), type_message="Range of n should be [1, 4]")
TOP_LOGPROBS = Range(
    "top_logprobs",
    "Integer",
    *between(0, 5, "Range of top_logprobs should be [0, 5]"),
    type_message="Range of top_logprobs should be [0, 5]",
)
# The bounds that need the model (max_tokens ≤ its max output …) are checked in service/plan.py; here
# only the type, and the lower bound DashScope states for every model.
MAX_TOKENS = Range("max_tokens", "Integer")
MAX_COMPLETION_TOKENS = Range("max_completion_tokens", "Integer")
MAX_INPUT_TOKENS = Range("max_input_tokens", "Integer")
THINKING_BUDGET = Range("thinking_budget", "Integer")

# Every numeric field, for the docs and the tests: the README's compatibility table lists these ranges.
TABLE: tuple[Range, ...] = (
    TEMPERATURE,
    TOP_P,
    TOP_K,
    REPETITION_PENALTY,
    PRESENCE_PENALTY,
    FREQUENCY_PENALTY,
    SEED,
    N,
    TOP_LOGPROBS,
    MAX_TOKENS,
    MAX_COMPLETION_TOKENS,
    MAX_INPUT_TOKENS,
    THINKING_BUDGET,
)

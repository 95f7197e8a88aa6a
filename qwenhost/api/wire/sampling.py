"""Sampling, seeds, stops, logit bias and the choice count: wire fields -> core values (spec §1.3 #7–#11,
#17, #25–#28). Ranges come from ranges.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qwenhost.api.wire import ranges
from qwenhost.api.wire.values import is_int, is_number, read_bool
from qwenhost.core.errors import InvalidParameter
from qwenhost.core.types import SamplingOverrides, StopRule

STOP_TYPE_MESSAGE = (
    'The "stop" parameter must be of type "str", "list[str]", "list[int]", or "list[list[int]]", '
    "and all elements within the list must be of the same type."
)
TOP_K_LIMIT = 100  # above it, top_k is off (spec §1.3 #9)


def _float(body: Mapping[str, Any], rule: ranges.Range) -> float | None:
    value = rule.read(body)
    return float(value) if value is not None else None


def read_sampling(body: Mapping[str, Any]) -> SamplingOverrides:
    top_k = ranges.TOP_K.read(body)
    # null disables top_k (spec §1.3 #9); so do 0 and anything above 100 (0 keeps every token: qwenhost's
    # reading, as in vLLM and llama.cpp, where 0 means "no top-k").
    top_k_disabled = ("top_k" in body and top_k is None) or (top_k is not None and (top_k == 0 or top_k > TOP_K_LIMIT))
    seed = ranges.SEED.read(body)
    return SamplingOverrides(
        temperature=_float(body, ranges.TEMPERATURE),
        top_p=_float(body, ranges.TOP_P),
        top_k=int(top_k) if top_k is not None else None,
        top_k_disabled=top_k_disabled,
        presence_penalty=_float(body, ranges.PRESENCE_PENALTY),
        frequency_penalty=_float(body, ranges.FREQUENCY_PENALTY),
        repetition_penalty=_float(body, ranges.REPETITION_PENALTY),
        seed=int(seed) if seed is not None else None,
    )


def read_logit_bias(raw: Any) -> tuple[tuple[int, float], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise InvalidParameter("'logit_bias' must be an object mapping token ids to numbers")
    out = []
    for key, value in raw.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise InvalidParameter(f"logit_bias key {key!r} is not a token id") from None
        if not is_number(value) or not -100 <= value <= 100:
            raise InvalidParameter("logit_bias values should be in [-100, 100]")
        out.append((token, float(value)))
    return tuple(out)


def parse_stop(value: Any) -> StopRule:
    """``stop``: a string, strings, token ids or token-id lists. An empty string can never match, so it
    is dropped (documented in docs/compatibility.md)."""
    if value is None:
        return StopRule()
    if isinstance(value, str):
        return StopRule(strings=(value,) if value else ())
    if not isinstance(value, list):
        raise InvalidParameter(STOP_TYPE_MESSAGE)
    if not value:
        return StopRule()
    if all(isinstance(v, str) for v in value):
        return StopRule(strings=tuple(v for v in value if v))
    if all(is_int(v) and v >= 0 for v in value):
        return StopRule(token_sequences=tuple((int(v),) for v in value))
    if all(isinstance(v, list) and v and all(is_int(t) and t >= 0 for t in v) for v in value):
        return StopRule(token_sequences=tuple(tuple(int(t) for t in v) for v in value))
    raise InvalidParameter(STOP_TYPE_MESSAGE)


def read_choices(body: Mapping[str, Any]) -> tuple[int, bool, int]:
    """``n``, ``logprobs`` and ``top_logprobs``."""
    n = ranges.N.read(body)
    top_logprobs = ranges.TOP_LOGPROBS.read(body)
    return int(n if n is not None else 1), read_bool(body, "logprobs"), int(top_logprobs or 0)


def read_limits(body: Mapping[str, Any]) -> dict[str, Any]:
    """The token limits whose upper bound depends on the model (checked in service/plan.py)."""
    rules = (ranges.MAX_TOKENS, ranges.MAX_COMPLETION_TOKENS, ranges.MAX_INPUT_TOKENS, ranges.THINKING_BUDGET)
    out: dict[str, Any] = {}
    for rule in rules:
        value = rule.read(body)
        out[rule.key] = int(value) if value is not None else None
    return out

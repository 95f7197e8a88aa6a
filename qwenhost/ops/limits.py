"""Rate limits with DashScope's codes (spec §3.2, §5.4): requests and tokens per minute per key and per
key on each model, with a per-second burst cap; the pure decisions here, their rows in store/windows.py.

Fixed windows (the current minute, the current second) rather than sliding logs: one row per scope,
updated under a row lock, so admission is exact ("N requests, then 429") across replicas sharing
PostgreSQL and across restarts. A fixed window lets up to twice the limit through around a minute's
edge; the burst cap bounds how fast that can happen."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from qwenhost.core.errors import ServeError

MINUTE = 60


class RateLimited(ServeError):
    """429 with DashScope's code and message; the compatible-mode ``type`` is the code's lower-case form
    from the same catalogue row (spec §3.2 lists both, e.g. ``Throttling.RateQuota`` / ``limit_requests``)."""

    status = 429

    def __init__(self, retry_after_s: float, info: RateInfo | None = None) -> None:
        super().__init__(self.MESSAGE)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.info = info

    MESSAGE = ""


class RateQuotaExceeded(RateLimited):
    code = "Throttling.RateQuota"
    type = "limit_requests"
    MESSAGE = "Requests rate limit exceeded, please try again later."


class BurstRateExceeded(RateLimited):
    code = "Throttling.BurstRate"
    type = "limit_burst_rate"
    MESSAGE = (
        "Request rate increased too quickly. To ensure system stability, please adjust your client logic to "
        "scale requests more smoothly over time."
    )


class AllocationQuotaExceeded(RateLimited):
    code = "Throttling.AllocationQuota"
    type = "insufficient_quota"
    MESSAGE = "Allocated quota exceeded, please increase your quota limit."


@dataclass(frozen=True, slots=True)
class Limit:
    rpm: int | None = None  # requests per minute; None: no limit
    tpm: int | None = None  # tokens (prompt + completion) per minute; None: no limit


@dataclass(frozen=True, slots=True)
class ScopeLimit:
    """One limited scope: ``key:<name>`` (the key's own limits, all models together) or
    ``key:<name>|model:<served model>`` (the configured per-model limits, for each key apart)."""

    scope: str
    rpm: int | None
    tpm: int | None
    burst: int | None  # requests in one second; None: no burst cap


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The configured limits: per model (each key apart, as DashScope limits each account per model), a
    default for models not listed, and how much of a minute's requests one second may use."""

    default: Limit = field(default_factory=Limit)
    models: Mapping[str, Limit] = field(default_factory=dict)
    burst_factor: float = 2.0  # a second may use burst_factor x rpm/60 requests (rounded up, at least 1)

    def burst_for(self, rpm: int | None) -> int | None:
        return None if rpm is None else max(1, math.ceil(rpm / MINUTE * self.burst_factor))

    def scopes(self, key_name: str, key_limit: Limit, model: str) -> list[ScopeLimit]:
        """The scopes a request of this key on this served model counts against, sorted (lock order)."""
        out = []
        if key_limit.rpm is not None or key_limit.tpm is not None:
            out.append(ScopeLimit(f"key:{key_name}", key_limit.rpm, key_limit.tpm, self.burst_for(key_limit.rpm)))
        per_model = self.models.get(model, self.default)
        if per_model.rpm is not None or per_model.tpm is not None:
            scope = f"key:{key_name}|model:{model}"
            out.append(ScopeLimit(scope, per_model.rpm, per_model.tpm, self.burst_for(per_model.rpm)))
        return sorted(out, key=lambda s: s.scope)


@dataclass(frozen=True, slots=True)
class Window:
    minute_start: int = 0
    minute_requests: int = 0
    minute_tokens: int = 0
    second_start: int = 0
    second_requests: int = 0

    def at(self, now: float) -> Window:
        """This window as seen at ``now``: counts of a minute or second that has ended start again at 0."""
        minute, second = int(now) // MINUTE * MINUTE, int(now)
        window = self
        if window.minute_start != minute:
            window = replace(window, minute_start=minute, minute_requests=0, minute_tokens=0)
        if window.second_start != second:
            window = replace(window, second_start=second, second_requests=0)
        return window

    def admitted(self) -> Window:
        return replace(self, minute_requests=self.minute_requests + 1, second_requests=self.second_requests + 1)


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What the ``x-ratelimit-*`` headers say: the tightest scope's limits, what is left, and when the
    minute ends (seconds). None where no scope limits that quantity."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_s: float = 0.0

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        reset = f"{max(0, math.ceil(self.reset_s))}s"
        if self.limit_requests is not None and self.remaining_requests is not None:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(max(0, self.remaining_requests))
            out["x-ratelimit-reset-requests"] = reset
        if self.limit_tokens is not None and self.remaining_tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(max(0, self.remaining_tokens))
            out["x-ratelimit-reset-tokens"] = reset
        return out

    def tighter(self, limit: ScopeLimit, window: Window, now: float) -> RateInfo:
        info = replace(self, reset_s=max(self.reset_s, window.minute_start + MINUTE - now))
        if limit.rpm is not None:
            left = limit.rpm - window.minute_requests
            if info.remaining_requests is None or left < info.remaining_requests:
                info = replace(info, limit_requests=limit.rpm, remaining_requests=left)
        if limit.tpm is not None:
            left = limit.tpm - window.minute_tokens
            if info.remaining_tokens is None or left < info.remaining_tokens:
                info = replace(info, limit_tokens=limit.tpm, remaining_tokens=left)
        return info


def refusal(limit: ScopeLimit, window: Window, now: float) -> RateLimited | None:
    """Why ``window`` (already seen at ``now``) cannot take one more request, or None. A request is
    admitted while the minute's spent tokens are below tpm: tokens are known, and counted, on completion."""
    minute_left = window.minute_start + MINUTE - now
    if limit.rpm is not None and window.minute_requests >= limit.rpm:
        return RateQuotaExceeded(minute_left)
    if limit.burst is not None and window.second_requests >= limit.burst:
        return BurstRateExceeded(window.second_start + 1 - now)
    if limit.tpm is not None and window.minute_tokens >= limit.tpm:
        return AllocationQuotaExceeded(minute_left)
    return None

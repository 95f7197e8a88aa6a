"""Per chat request: admission (the key's models, then the rate limits, counted in the store) and the
ledger entry at the end; per-key Prometheus counters for configured key names only (bounded labels)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from qwenhost.core.types import Usage
from qwenhost.ops.auth import ModelAccessDenied, Principal
from qwenhost.ops.limits import LimitPolicy, RateInfo
from qwenhost.ops.store import ledger, windows
from qwenhost.ops.store.ledger import LedgerEntry
from qwenhost.ops.store.runner import AsyncStore

OTHER_KEY = "other"


@dataclass(frozen=True, slots=True)
class Admission:
    scopes: tuple[str, ...]  # the rate-window rows this request's tokens are charged to
    info: RateInfo


class KeyCounters:
    """``qwenhost_key_requests_total{key,status}`` and ``qwenhost_key_tokens_total{key,kind}``; a key whose
    name is not listed counts under ``other`` (/metrics needs no key; names must not grow without bound)."""

    KINDS = ("prompt", "cached", "completion", "reasoning", "media")

    def __init__(self, registry: CollectorRegistry, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.requests = Counter("qwenhost_key_requests", "Chat requests by key", ["key", "status"], registry=registry)
        self.tokens = Counter("qwenhost_key_tokens", "Tokens by key and kind", ["key", "kind"], registry=registry)

    def observe(self, entry: LedgerEntry) -> None:
        key = entry.key_name if entry.key_name in self.names else OTHER_KEY
        self.requests.labels(key, str(entry.status)).inc()
        counts = (
            entry.prompt_tokens,
            entry.cached_tokens,
            entry.completion_tokens,
            entry.reasoning_tokens,
            entry.media_tokens,
        )
        for kind, n in zip(self.KINDS, counts, strict=True):
            if n:
                self.tokens.labels(key, kind).inc(n)


class Accounting:
    def __init__(self, store: AsyncStore, policy: LimitPolicy, counters: KeyCounters | None = None) -> None:
        self.store = store
        self.policy = policy
        self.counters = counters

    async def admit(self, principal: Principal, requested: str, served: str) -> Admission:
        """Refuses with ModelAccessDenied (403) or RateLimited (429, its RateInfo attached); else counts the
        request in every scope it falls under."""
        if not principal.may_use(requested, served):
            raise ModelAccessDenied()
        scopes = self.policy.scopes(principal.name, principal.limit, served)
        info = await self.store.call(windows.admit, scopes, time.time())
        return Admission(tuple(s.scope for s in scopes), info)

    async def record(self, entry: LedgerEntry, scopes: tuple[str, ...]) -> None:
        """Durable once it returns (the commit is awaited); raises StoreUnavailable otherwise."""
        await self.store.call(ledger.record, entry, scopes)
        if self.counters is not None:
            self.counters.observe(entry)


def entry_for(
    request_id: str,
    principal: Principal,
    alias: str,
    model: str,
    status: int,
    stream: bool,
    usage: Usage | None,
    duration_s: float,
) -> LedgerEntry:
    media = sum(n or 0 for n in (usage.image_tokens, usage.video_tokens, usage.audio_tokens)) if usage else 0
    return LedgerEntry(
        request_id=request_id,
        key_name=principal.name,
        key_id=principal.key_id,
        model=model,
        alias=alias[:200],
        status=status,
        stream=stream,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        cached_tokens=usage.cache.cached_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        reasoning_tokens=(usage.reasoning_tokens or 0) if usage else 0,
        media_tokens=media,
        duration_ms=int(duration_s * 1000),
        finished_ms=int(time.time() * 1000),
    )

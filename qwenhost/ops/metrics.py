"""Prometheus metrics and the per-request observer that feeds them and the access log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from qwenhost.core.events import ChatEvent, ContentDelta, Finish, ReasoningDelta, ToolCallArgsDelta, ToolCallStart
from qwenhost.core.types import Usage

access_log = logging.getLogger("qwenhost.access")

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class _EngineCollector:
    """Reads each backend's gauges at scrape time (running sequences, queue depth, KV usage …)."""

    def __init__(self, sources: Callable[[], Iterable[tuple[str, Mapping[str, float]]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for model, stats in self._sources():
            for key, value in stats.items():
                family = families.get(key)
                if family is None:
                    family = families[key] = GaugeMetricFamily(
                        f"qwenhost_engine_{key}", f"engine gauge {key}", labels=["model"]
                    )
                family.add_metric([model], float(value))
        return list(families.values())


def _kv_usage(stats: Mapping[str, float]) -> float | None:
    capacity, held = stats.get("kv_cells_capacity"), stats.get("kv_tokens_held")
    if not capacity or held is None:
        return None
    return min(1.0, held / capacity)


# The gauges and counters that routers and autoscalers read, under vLLM's names (vLLM's
# docs/design/metrics.md; llm-d's endpoint picker reads the first three, gateway-api-inference-extension
# proposal 003), computed from the same engine stats as the qwenhost_engine_* gauges.
# (name, help, how to read it from one engine's stats)
_VLLM_GAUGES: tuple[tuple[str, str, Callable[[Mapping[str, float]], float | None]], ...] = (
    ("vllm:num_requests_running", "Sequences being decoded or prefilled", lambda s: s.get("running_sequences")),
    ("vllm:num_requests_waiting", "Requests waiting for a sequence slot", lambda s: s.get("waiting_requests")),
    # KV cells holding tokens over all cells: llama.cpp keeps finished prompts as the implicit prefix cache,
    # so an idle replica with a warm cache reads above 0 (vLLM counts such blocks as free).
    ("vllm:kv_cache_usage_perc", "Fraction of KV cells holding tokens (0 to 1)", _kv_usage),
    ("vllm:gpu_cache_usage_perc", "Deprecated vLLM name of vllm:kv_cache_usage_perc", _kv_usage),
)
_VLLM_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache", "prompt_tokens"),
    ("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache", "cached_prompt_tokens"),
)


class _VllmCollector:
    """The vLLM-named series of each served model, labelled ``model_name`` as vLLM labels them."""

    def __init__(self, sources: Callable[[], Iterable[tuple[str, Mapping[str, float]]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        gauges = {name: GaugeMetricFamily(name, text, labels=["model_name"]) for name, text, _ in _VLLM_GAUGES}
        counters = {name: CounterMetricFamily(name, text, labels=["model_name"]) for name, text, _ in _VLLM_COUNTERS}
        for model, stats in self._sources():
            for name, _, read in _VLLM_GAUGES:
                value = read(stats)
                if value is not None:
                    gauges[name].add_metric([model], float(value))
            for name, _, key in _VLLM_COUNTERS:
                if key in stats:
                    counters[name].add_metric([model], float(stats[key]))
        return [*gauges.values(), *counters.values()]


UNKNOWN_MODEL = "unknown"


class Metrics:
    """Request counters and latency histograms, labelled by served model.

    /metrics needs no key, so labels come only from ``model_names`` (each configured name and alias -> the
    served model's name); any other name a client sends is counted under one ``unknown`` label.
    """

    def __init__(
        self,
        engine_stats: Callable[[], Iterable[tuple[str, Mapping[str, float]]]],
        model_names: Mapping[str, str] | None = None,
    ) -> None:
        self._labels = dict(model_names or {})
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("qwenhost_requests", "Chat requests by outcome", ["model", "status"], registry=r)
        self.prompt_tokens = Counter("qwenhost_prompt_tokens", "Prompt tokens", ["model"], registry=r)
        self.completion_tokens = Counter("qwenhost_completion_tokens", "Generated tokens", ["model"], registry=r)
        self.cached_tokens = Counter(
            "qwenhost_cached_prompt_tokens", "Prompt tokens served from cache", ["model"], registry=r
        )
        self.ttft = Histogram(
            "qwenhost_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "qwenhost_inter_token_latency_seconds",
            "Time between streamed deltas",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "qwenhost_request_duration_seconds", "Whole request time", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        r.register(_EngineCollector(engine_stats))
        r.register(_VllmCollector(engine_stats))

    def label_for(self, model: str | None) -> str:
        return self._labels.get(model, UNKNOWN_MODEL) if model is not None else UNKNOWN_MODEL

    def render(self) -> bytes:
        return generate_latest(self.registry)


_TOKEN_EVENTS = (ContentDelta, ReasoningDelta, ToolCallStart, ToolCallArgsDelta)


@dataclass
class RequestObserver:
    """Watches one request's events; ``close()`` records metrics and writes the access-log line."""

    metrics: Metrics | None
    request_id: str
    key_id: str | None
    started_s: float = field(default_factory=time.perf_counter)
    model: str = "-"  # as the client named it, for the access log
    label: str = UNKNOWN_MODEL  # the served model's name, for metrics
    stream: bool = False
    first_token_s: float | None = None
    last_token_s: float | None = None
    finish_reasons: list[str] = field(default_factory=list)

    def set_model(self, requested: str) -> None:
        self.model = requested[:200]  # a log line, not a copy of whatever the client sent
        self.label = self.metrics.label_for(requested) if self.metrics is not None else UNKNOWN_MODEL

    def on_event(self, event: ChatEvent) -> None:
        if isinstance(event, _TOKEN_EVENTS):
            now = time.perf_counter()
            if self.first_token_s is None:
                self.first_token_s = now
                if self.metrics is not None:
                    self.metrics.ttft.labels(self.label).observe(now - self.started_s)
            elif self.metrics is not None and self.last_token_s is not None:
                self.metrics.itl.labels(self.label).observe(now - self.last_token_s)
            self.last_token_s = now
        elif isinstance(event, Finish):
            self.finish_reasons.append(event.reason)

    def close(self, status: int, usage: Usage | None, error: str | None = None) -> None:
        elapsed = time.perf_counter() - self.started_s
        if self.metrics is not None:
            self.metrics.requests.labels(self.label, str(status)).inc()
            self.metrics.duration.labels(self.label).observe(elapsed)
            if usage is not None:
                self.metrics.prompt_tokens.labels(self.label).inc(usage.prompt_tokens)
                self.metrics.completion_tokens.labels(self.label).inc(usage.completion_tokens)
                self.metrics.cached_tokens.labels(self.label).inc(usage.cache.cached_tokens)
        if access_log.isEnabledFor(logging.INFO):
            record = {
                "request_id": self.request_id,
                "model": self.model,
                "key_id": self.key_id,
                "status": status,
                "stream": self.stream,
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "cached_tokens": usage.cache.cached_tokens if usage else None,
                "ttft_ms": round((self.first_token_s - self.started_s) * 1000, 1) if self.first_token_s else None,
                "duration_ms": round(elapsed * 1000, 1),
                "finish_reason": ",".join(self.finish_reasons) or None,
            }
            if error:
                record["error"] = error
            access_log.info(json.dumps(record, ensure_ascii=False))

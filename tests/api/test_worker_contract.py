"""The worker contract every `qwenhost serve` process keeps for a router in front of it (docs/scale-out.md):
ready vs. live probes, vLLM-named gauges on /metrics, the replica header, and ready going false first on
SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from qwenhost.api.app import create_app
from qwenhost.config import DASHSCOPE_ALIASES, ModelConfig, ServerConfig, hash_key
from qwenhost.engine.fake import FakeBackend
from qwenhost.main import replica_name, served_model
from qwenhost.ops.auth import KeyStore
from qwenhost.ops.lifecycle import Lifecycle
from qwenhost.ops.metrics import Metrics
from qwenhost.service.chat import ChatService
from qwenhost.service.models import ModelRegistry
from tests.api.test_edge_http import GOOD, PATH, _Drained, _frames, _wait_for, serving


class StalledBackend(FakeBackend):
    def health(self) -> str | None:
        return "The engine has made no progress for 99 s with 1 request in flight."


def _app(backend: FakeBackend, lifecycle: Lifecycle, replica_id: str | None = "replica-a", key: str = "") -> Starlette:
    config = ModelConfig(name="fake-model", path="unused", aliases=DASHSCOPE_ALIASES)
    registry = ModelRegistry([served_model(config, backend)])
    metrics = Metrics(lambda: [(m.name, m.backend.stats()) for m in registry], {n: m.name for n, m in registry.names()})
    keys = KeyStore([("k", hash_key(key))] if key else [])
    return create_app(ChatService(registry), keys, metrics, lifecycle=lifecycle, replica_id=replica_id)


def _get(app: Starlette, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            if "json" in kwargs:
                return await client.post(path, **kwargs)
            return await client.get(path, **kwargs)

    return asyncio.run(go())


def test_ready_and_live_while_serving() -> None:
    app = _app(FakeBackend(), Lifecycle())
    for path, status in (("/health", "ok"), ("/health/ready", "ready"), ("/health/live", "live")):
        r = _get(app, path)
        assert r.status_code == 200 and r.json()["status"] == status, (path, r.text)


def test_a_draining_process_is_live_but_not_ready() -> None:
    lifecycle = Lifecycle()
    lifecycle.is_draining = True
    app = _app(FakeBackend(), lifecycle)
    for path in ("/health", "/health/ready"):
        r = _get(app, path)
        assert r.status_code == 503 and r.json()["error"]["message"] == "The server is shutting down.", path
    live = _get(app, "/health/live")
    assert live.status_code == 200 and live.json() == {"status": "live", "draining": True}


def test_a_stalled_engine_is_neither_live_nor_ready() -> None:
    app = _app(StalledBackend(), Lifecycle())
    for path in ("/health", "/health/ready", "/health/live"):
        r = _get(app, path)
        assert r.status_code == 503 and "no progress for 99 s" in r.json()["error"]["message"], path


def test_probes_need_no_key_and_every_answer_names_the_replica() -> None:
    app = _app(FakeBackend(), Lifecycle(), replica_id="node-7:8001", key="secret")
    for path in ("/health/ready", "/health/live", "/metrics"):
        r = _get(app, path)
        assert r.status_code == 200 and r.headers["x-qwenhost-replica"] == "node-7:8001", path
    refused = _get(app, PATH, json=GOOD)  # an error answer is named too
    assert refused.status_code == 401 and refused.headers["x-qwenhost-replica"] == "node-7:8001"
    served = _get(app, PATH, json=GOOD, headers={"Authorization": "Bearer secret"})
    assert served.status_code == 200 and served.headers["x-qwenhost-replica"] == "node-7:8001"


def test_replica_name_defaults_to_host_and_port() -> None:
    assert replica_name(ServerConfig(replica_id="r1")) == "r1"
    assert re.fullmatch(r".+:8123", replica_name(ServerConfig(port=8123)))


def test_metrics_carry_vllm_names_next_to_qwenhost_names() -> None:
    class Busy(FakeBackend):
        def stats(self) -> dict[str, float]:
            return {
                "running_sequences": 3,
                "waiting_requests": 2,
                "kv_cells_capacity": 1000,
                "kv_tokens_held": 250,
                "prompt_tokens": 4000,
                "cached_prompt_tokens": 3000,
            }

    text = _get(_app(Busy(), Lifecycle()), "/metrics").text
    expected = {
        "vllm:num_requests_running": 3.0,
        "vllm:num_requests_waiting": 2.0,
        "vllm:kv_cache_usage_perc": 0.25,
        "vllm:gpu_cache_usage_perc": 0.25,
        "vllm:prefix_cache_queries_total": 4000.0,
        "vllm:prefix_cache_hits_total": 3000.0,
        "qwenhost_engine_running_sequences": 3.0,
    }
    for name, value in expected.items():
        match = re.search(rf'^{re.escape(name)}\{{model_name="fake-model"\}} (\S+)$', text, re.M) or re.search(
            rf'^{re.escape(name)}\{{model="fake-model"\}} (\S+)$', text, re.M
        )
        assert match and float(match.group(1)) == value, name


def test_sigterm_turns_ready_off_before_the_streams_in_flight_end() -> None:
    """A router must stop sending new work the moment the drain starts, while the streams already under
    way keep going (the process stays live)."""
    backend = FakeBackend(script=lambda r, c: "x" * 10_000, step_delay_s=0.01)

    def make(config: uvicorn.Config, lifecycle: Lifecycle) -> uvicorn.Server:
        return _Drained(config, lifecycle, backend, 1.0)

    with serving(backend, make_server=make) as served:
        results: list[tuple[int, list[Any]]] = []
        stream = threading.Thread(target=_frames, args=(served.url, results))
        stream.start()
        _wait_for(lambda: backend.in_flight == 1)
        served.server.handle_exit(signal.SIGTERM, None)
        _wait_for(lambda: served.lifecycle.is_draining)
        assert backend.in_flight == 1, "the stream ended before ready went false"
        assert httpx.get(f"{served.url}/health/ready").status_code == 503
        assert httpx.get(f"{served.url}/health/live").status_code == 200
        stream.join(timeout=30)
    assert results and results[0][1][-1] == "[DONE]"

"""The HTTP edge over a real socket (uvicorn in a thread, scripted FakeBackend): errors never poison the
keep-alive connection, bodies are bounded, a client that leaves early frees its room, and the drain ends
every stream with a final event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from qwenhost.api.app import create_app
from qwenhost.api.options import EdgeOptions
from qwenhost.config import DASHSCOPE_ALIASES, ModelConfig
from qwenhost.engine.fake import FakeBackend, FakeTokenizer
from qwenhost.engine.protocol import EngineOutput, GenerationRequest, Reservation
from qwenhost.main import served_model
from qwenhost.ops.auth import KeyStore
from qwenhost.ops.lifecycle import Lifecycle, drain
from qwenhost.ops.metrics import Metrics
from qwenhost.ops.server import GracefulServer
from qwenhost.service.chat import ChatService
from qwenhost.service.models import ModelRegistry
from tests.support.server import free_port

PATH = "/compatible-mode/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
GOOD = {"model": "qwen-plus", "messages": USER}


class ExplodingTokenizer(FakeTokenizer):
    """A bug stand-in: tokenizing text that holds BOOM raises an unexpected exception."""

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        if "BOOM" in text:
            raise RuntimeError("a bug in the tokenizer")
        return super().tokenize(text, add_special=add_special, parse_special=parse_special)


class ExplodingBackend(FakeBackend):
    @property
    def tokenizer(self) -> FakeTokenizer:
        return ExplodingTokenizer()


class QueuedBackend(FakeBackend):
    """Every request waits in the queue forever (no first event) until it is closed."""

    async def generate(self, request: GenerationRequest, reservation: Reservation) -> AsyncIterator[EngineOutput]:
        try:
            await asyncio.Event().wait()
            yield  # type: ignore[misc]  # never reached: the request stays queued
        finally:
            reservation.release()
            self.aborted.append(request.request_id)


@dataclass
class Served:
    url: str
    backend: FakeBackend
    lifecycle: Lifecycle
    server: uvicorn.Server


def _app(backend: FakeBackend, options: EdgeOptions, lifecycle: Lifecycle) -> Starlette:
    config = ModelConfig(name="fake-model", path="unused", aliases=DASHSCOPE_ALIASES)
    registry = ModelRegistry([served_model(config, backend)])
    metrics = Metrics(lambda: [(m.name, m.backend.stats()) for m in registry], {n: m.name for n, m in registry.names()})
    return create_app(ChatService(registry), KeyStore([]), metrics, options, lifecycle)


@contextlib.contextmanager
def serving(
    backend: FakeBackend,
    options: EdgeOptions | None = None,
    make_server: Callable[[uvicorn.Config, Lifecycle], uvicorn.Server] = lambda c, _: uvicorn.Server(c),
) -> Iterator[Served]:
    options = options or EdgeOptions()
    lifecycle = Lifecycle()
    port = free_port()
    config = uvicorn.Config(
        _app(backend, options, lifecycle), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = make_server(config, lifecycle)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", backend, lifecycle, server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _port(response: httpx.Response) -> int:
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


def _bad_then_good(served: Served, send_bad: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
    """The bad request's answer, after checking that the next request on the same connection is served."""
    with httpx.Client(base_url=served.url, timeout=30) as client:
        bad = send_bad(client)
        good = client.post(PATH, json=GOOD)
        assert good.status_code == 200, good.text
        assert _port(good) == _port(bad), "the keep-alive connection was dropped"
    return bad


def _post_bytes(client: httpx.Client, content: bytes | Iterator[bytes]) -> httpx.Response:
    return client.post(PATH, content=content, headers={"content-type": "application/json"})


def test_unexpected_error_answers_500_and_keeps_the_connection() -> None:
    with serving(ExplodingBackend()) as served:
        bad = _bad_then_good(
            served, lambda c: c.post(PATH, json={**GOOD, "messages": [{"role": "user", "content": "BOOM"}]})
        )
    assert bad.status_code == 500
    assert bad.json()["error"]["code"] == "internal_error" and bad.json()["request_id"]


def test_body_over_the_limit_is_413_by_header_and_by_count() -> None:
    limit = 4096
    big = json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * limit}]}).encode()
    with serving(FakeBackend(), EdgeOptions(max_body_bytes=limit)) as served:
        declared = _bad_then_good(served, lambda c: _post_bytes(c, big))
        chunked = _bad_then_good(
            served, lambda c: _post_bytes(c, (big[i : i + 1000] for i in range(0, len(big), 1000)))
        )
        assert _bad_then_good(served, lambda c: _post_bytes(c, big[: limit - 100])).status_code == 400  # under: read
    for r in (declared, chunked):
        assert r.status_code == 413
        assert r.json()["error"] == {
            "code": "invalid_request_error",
            "param": None,
            "message": f"The request body is larger than this server's limit of {limit} bytes.",
            "type": "invalid_request_error",
        }


def test_lone_surrogate_is_400_naming_where() -> None:
    body = json.dumps({**GOOD, "stream": True, "tools": [{"type": "function", "function": {"name": "f\udcff"}}]})
    with serving(FakeBackend()) as served:
        r = _bad_then_good(served, lambda c: _post_bytes(c, body.encode()))
    assert r.status_code == 400 and r.text.startswith("data: ")  # a streaming request: SSE body (spec §3.1)
    error = json.loads(r.text[6:])["error"]
    assert error["code"] == "invalid_parameter_error" and "tools[0].function.name" in error["message"]


def _raw_stream_request(url: str) -> socket.socket:
    data = json.dumps({**GOOD, "stream": True}).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = f"POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    return sock


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_streaming_client_leaving_while_queued_is_aborted_at_once() -> None:
    backend = QueuedBackend()
    with serving(backend) as served:
        sock = _raw_stream_request(served.url)
        _wait_for(lambda: backend.admission.in_flight_requests == 1)
        sock.close()
        _wait_for(lambda: backend.admission.in_flight_requests == 0)
        assert len(backend.aborted) == 1
        _wait_for(lambda: served.lifecycle.in_flight == 0)


class _Drained(GracefulServer):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, backend: FakeBackend, grace_s: float) -> None:
        super().__init__(config, lambda hurry: drain(lifecycle, [backend], grace_s, hurry))


def _frames(url: str, out: list[tuple[int, list[Any]]]) -> None:
    with httpx.stream("POST", f"{url}{PATH}", json={**GOOD, "stream": True}, timeout=30) as r:
        frames = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    out.append((r.status_code, [f if f == "[DONE]" else json.loads(f) for f in frames]))


def test_drain_refuses_new_requests_then_ends_every_stream_with_a_final_event() -> None:
    backend = FakeBackend(script=lambda r, c: "x" * 10_000, step_delay_s=0.01)
    grace_s = 0.5

    def make(config: uvicorn.Config, lifecycle: Lifecycle) -> uvicorn.Server:
        return _Drained(config, lifecycle, backend, grace_s)

    with serving(backend, make_server=make) as served:
        results: list[tuple[int, list[Any]]] = []
        threads = [threading.Thread(target=_frames, args=(served.url, results)) for _ in range(3)]
        for t in threads:
            t.start()
        _wait_for(lambda: backend.in_flight == 3)
        served.server.handle_exit(signal.SIGTERM, None)
        _wait_for(lambda: served.lifecycle.is_draining)
        health = httpx.get(f"{served.url}/health")
        assert health.status_code == 503 and health.json()["error"]["message"] == "The server is shutting down."
        late = httpx.post(f"{served.url}{PATH}", json=GOOD)
        assert late.status_code == 503 and late.json()["error"]["code"] == "ServiceUnavailable"
        for t in threads:
            t.join(timeout=30)
        _wait_for(lambda: served.server.should_exit)
    assert len(results) == 3
    for status, frames in results:
        assert status == 200 and frames[-1] == "[DONE]"
        assert frames[-2]["error"]["message"] == "The server is shutting down.", frames[-2]

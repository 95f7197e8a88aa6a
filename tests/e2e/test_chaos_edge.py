"""Chaos at the HTTP edge, against the real server: oversized and unencodable bodies get envelopes without
poisoning their keep-alive connection, a client that leaves while queued frees its place, /metrics labels
stay bounded, and SIGTERM during a concurrency-8 run ends every stream with a final event and exits 0."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e

MODEL = "edge-model"
BODY_LIMIT = 1 << 20
EDGE_CONFIG = f"""
[server]
max_body_bytes = {BODY_LIMIT}

[[models]]
name = "{MODEL}"
aliases = ["qwen-plus"]
parallel = 1
context_length = 2048
"""
USER = [{"role": "user", "content": "hi"}]
GOOD = {"model": "qwen-plus", "messages": USER, "max_tokens": 2}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("edge"), config=EDGE_CONFIG) as srv:
        yield srv


def _local_port(response: httpx.Response) -> int:
    """The client's port: the same port means the same keep-alive connection."""
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


def _then_served_on_same_connection(client: httpx.Client, url: str, first: httpx.Response) -> None:
    second = client.post(url, json=GOOD)
    assert second.status_code == 200, second.text
    assert _local_port(second) == _local_port(first)


def _json_post(client: httpx.Client, url: str, content: bytes | Iterator[bytes]) -> httpx.Response:
    return client.post(url, content=content, headers={"content-type": "application/json"})


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_oversized_body_gets_413_and_the_connection_serves_the_next_request(edge: RunningServer) -> None:
    url = f"{edge.base_url}/chat/completions"
    filler = "x" * (BODY_LIMIT + 1024)
    big = json.dumps({"model": "qwen-plus", "messages": [{"role": "user", "content": filler}]}).encode()
    with httpx.Client(timeout=60) as client:
        r = _json_post(client, url, big)  # Content-Length says it all: refused before the body is read
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_request_error" and str(BODY_LIMIT) in error["message"]
        _then_served_on_same_connection(client, url, r)

        chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))  # chunked: counted as it arrives
        r = _json_post(client, url, chunks)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "invalid_request_error"
        _then_served_on_same_connection(client, url, r)


LONE = "\udcff"
SURROGATE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("messages[0].content", {"messages": [{"role": "user", "content": f"hi {LONE}"}]}),
    (
        "tools[0].function.name",
        {"messages": USER, "tools": [{"type": "function", "function": {"name": f"f{LONE}", "parameters": {}}}]},
    ),
    (
        "messages[1].tool_calls[0].function.arguments",
        {
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": json.dumps({"q": LONE}, ensure_ascii=False)},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            ]
        },
    ),
    ("stop[1]", {"messages": USER, "stop": ["end", f"x{LONE}"]}),
    (
        "response_format.json_schema.schema.properties",
        {
            "messages": [{"role": "user", "content": "json please"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object", "properties": {LONE: {"type": "string"}}}},
            },
        },
    ),
]


@pytest.mark.parametrize(("where", "fields"), SURROGATE_CASES, ids=[c[0] for c in SURROGATE_CASES])
def test_lone_surrogate_gets_400_naming_where_and_the_connection_lives(
    edge: RunningServer, where: str, fields: dict[str, Any]
) -> None:
    url = f"{edge.base_url}/chat/completions"
    body = json.dumps({"model": "qwen-plus", "max_tokens": 2, **fields}).encode()  # ASCII: \udcff escapes
    assert b"\\udcff" in body
    with httpx.Client(timeout=60) as client:
        r = _json_post(client, url, body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_parameter_error"
        assert where in error["message"] and "surrogate" in error["message"], error
        _then_served_on_same_connection(client, url, r)


def _raw_streaming_request(srv: RunningServer, body: dict[str, Any]) -> socket.socket:
    """Send a streaming chat request on a bare socket and return without reading the answer."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    head = (
        f"POST /compatible-mode/v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def test_streaming_client_that_leaves_while_queued_frees_its_place(edge: RunningServer) -> None:
    long = {"model": "qwen-plus", "messages": USER, "max_tokens": 1900, "ignore_eos": True, "stream": True}
    _wait_for(lambda: edge.gauge("in_flight_requests") == 0, 60, "an idle server")
    busy = _raw_streaming_request(edge, long)  # parallel = 1: this one holds the only slot
    try:
        _wait_for(lambda: edge.gauge("in_flight_requests") == 1, 30, "the first request to run")
        queued = _raw_streaming_request(edge, long)
        _wait_for(lambda: edge.gauge("in_flight_requests") == 2, 30, "the second request to queue")
        queued.close()  # before its first event: only a disconnect watcher can notice
        _wait_for(lambda: edge.gauge("in_flight_requests") == 1, 10, "the queued request's place to be freed")
        busy.settimeout(5)
        assert busy.recv(65536), "the running stream is still being served"
    finally:
        busy.close()
    _wait_for(lambda: edge.gauge("in_flight_requests") == 0, 60, "the running request's place to be freed")


def test_streaming_client_that_leaves_mid_stream_stops_its_generation(edge: RunningServer) -> None:
    _wait_for(lambda: edge.gauge("in_flight_requests") == 0, 60, "an idle server")
    decoded_before = edge.gauge("decoded_tokens")
    max_tokens = 1900
    sock = _raw_streaming_request(
        edge, {"model": "qwen-plus", "messages": USER, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    )
    try:
        sock.settimeout(30)
        received = b""
        while received.count(b"data: ") < 3:  # past the first byte: Starlette's stream is running
            received += sock.recv(65536)
    finally:
        sock.close()
    _wait_for(lambda: edge.gauge("in_flight_requests") == 0, 60, "the stream's place to be freed")
    # Had the engine not been told, it would have decoded every one of the ignore_eos tokens first.
    assert edge.gauge("decoded_tokens") - decoded_before < max_tokens


def test_metrics_labels_come_from_configured_names_only(edge: RunningServer) -> None:
    stranger = f"no-such-model-{uuid.uuid4().hex}"
    with httpx.Client(base_url=edge.base_url, timeout=60) as client:
        assert client.post("/chat/completions", json={**GOOD, "model": stranger}).status_code == 404
        assert client.post("/chat/completions", json=GOOD).status_code == 200
    text = httpx.get(f"{edge.root}/metrics", timeout=10).text
    assert stranger not in text
    assert 'qwenhost_requests_total{model="unknown",status="404"}' in text
    assert f'qwenhost_requests_total{{model="{MODEL}",status="200"}}' in text
    assert 'model="qwen-plus"' not in text  # an alias counts under the model it names


def test_health_is_200_while_serving(edge: RunningServer) -> None:
    r = httpx.get(f"{edge.root}/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


# -- graceful shutdown --------------------------------------------------------------------------------
SHUTDOWN_CONFIG = """
[server]
shutdown_grace_s = 2.0

[[models]]
name = "drain-model"
aliases = ["qwen-plus"]
parallel = 4
context_length = 2048
"""


def _stream_frames(url: str, started: threading.Event, out: list[tuple[int, list[str]]]) -> None:
    body = {"model": "qwen-plus", "messages": USER, "max_tokens": 1900, "ignore_eos": True, "stream": True}
    frames: list[str] = []
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                frames.append(line[6:])
                started.set()
    out.append((r.status_code, frames))


def _ended_with_final_event(status: int, frames: list[str]) -> bool:
    """A finished stream: [DONE] after a finish_reason chunk or an error frame, or an SSE error body."""
    if status != 200:
        return status == 503 and len(frames) == 1 and "error" in json.loads(frames[0])
    if len(frames) < 2 or frames[-1] != "[DONE]":
        return False
    last = json.loads(frames[-2])
    return "error" in last or any(c.get("finish_reason") for c in last.get("choices", []))


def test_sigterm_drains_ends_every_stream_and_exits_0(tmp_path: Path) -> None:
    with running_server(tmp_path, config=SHUTDOWN_CONFIG) as srv:
        url = f"{srv.base_url}/chat/completions"
        results: list[tuple[int, list[str]]] = []
        started = [threading.Event() for _ in range(8)]
        threads = [threading.Thread(target=_stream_frames, args=(url, s, results)) for s in started]
        for t in threads:
            t.start()
        _wait_for(lambda: sum(s.is_set() for s in started) >= 4, 60, "four running streams")
        srv.process.send_signal(signal.SIGTERM)

        _wait_for(lambda: httpx.get(f"{srv.root}/health", timeout=10).status_code == 503, 10, "/health 503")
        health = httpx.get(f"{srv.root}/health", timeout=10).json()
        assert health["error"]["message"] == "The server is shutting down."
        late = httpx.post(url, json=GOOD, timeout=30)
        assert late.status_code == 503 and late.json()["error"]["code"] == "ServiceUnavailable"

        for t in threads:
            t.join(timeout=60)
        assert srv.process.wait(timeout=60) == 0, srv.log()
        assert len(results) == 8
        for status, frames in results:
            assert _ended_with_final_event(status, frames), (status, frames[-3:])
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.root}/health", timeout=5)

"""The native routes over a real socket: a client that leaves while queued frees its room, as on compatible mode."""

from __future__ import annotations

import json
import socket

import pytest

from tests.api.test_edge_http import QueuedBackend, _wait_for, serving

PATH = "/api/v1/services/aigc/text-generation/generation"
BODY = {"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": "hi"}]}, "parameters": {}}


def _raw_request(url: str, stream: bool) -> socket.socket:
    data = json.dumps(BODY).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sse = "x-dashscope-sse: enable\r\n" if stream else ""
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{sse}content-length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


@pytest.mark.parametrize("stream", [True, False])
def test_client_leaving_while_queued_is_aborted_at_once(stream: bool) -> None:
    backend = QueuedBackend()
    with serving(backend) as served:
        sock = _raw_request(served.url, stream)
        _wait_for(lambda: backend.admission.in_flight_requests == 1)
        sock.close()
        _wait_for(lambda: backend.admission.in_flight_requests == 0)
        assert len(backend.aborted) == 1
        _wait_for(lambda: served.lifecycle.in_flight == 0)

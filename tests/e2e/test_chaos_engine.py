"""Chaos against the real server and model: legal bursts beyond capacity and an injected fault never kill
or wedge the engine (issue 10). Every request gets 200, 429 or 503 in time, and the next one is served."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e

# A request that is answered at all is answered well before this; a hang (the engine thread dead or
# wedged, as in issue 10) waits for it and fails the test. Queued requests wait at most queue_timeout_s.
DEADLINE_S = 240.0
ANSWERS = {200, 429, 503}

SMALL_QUEUE = """
[[models]]
name = "tiny"
path = "embedded"
aliases = ["qwen-plus"]
parallel = 4
max_waiting = 4
context_length = 1024
"""

FAULTS = """
[server]
test_faults = true

[[models]]
name = "tiny"
path = "embedded"
aliases = ["qwen-plus"]
parallel = 2
context_length = 1024
"""

FAULT_HEADER = {"x-qwenhost-test-fault": "sample"}


def body(i: int, n: int, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "qwen-plus",
        "messages": [{"role": "user", "content": f"Tell me story number {i} about a lighthouse keeper."}],
        "n": n,
        "max_tokens": max_tokens,
        "seed": i,
        **extra,
    }


async def burst(server: RunningServer, count: int, n: int, max_tokens: int) -> list[httpx.Response]:
    """``count`` simultaneous non-streaming requests, each with its own connection."""
    limits = httpx.Limits(max_connections=count + 1, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=DEADLINE_S, limits=limits) as client:
        calls = [client.post("/chat/completions", json=body(i, n, max_tokens)) for i in range(count)]
        return list(await asyncio.gather(*calls))


def check_answers(responses: list[httpx.Response], n: int) -> None:
    assert {r.status_code for r in responses} <= ANSWERS, [(r.status_code, r.text[:200]) for r in responses]
    for r in responses:
        if r.status_code == 200:
            assert len(r.json()["choices"]) == n
        else:  # the DashScope envelope, with the code the status promises
            error = r.json()["error"]
            expected = "Throttling.Concurrency" if r.status_code == 429 else "ServiceUnavailable"
            assert error["code"] == expected, r.text
    assert any(r.status_code == 200 for r in responses), "nothing was served"


def assert_serves_a_plain_request(server: RunningServer) -> None:
    r = httpx.post(f"{server.base_url}/chat/completions", json=body(0, 1, 4), timeout=60)
    assert r.status_code == 200, r.text
    health = httpx.get(f"{server.root}/health", timeout=10)
    assert health.status_code == 200, health.text


def test_a_burst_beyond_a_small_queue_is_answered(tmp_path: Path) -> None:
    """The issue's reproduction: parallel 4, max_waiting 4, ten simultaneous n = 4 requests."""
    with running_server(tmp_path, config=SMALL_QUEUE) as srv:
        responses = asyncio.run(burst(srv, count=10, n=4, max_tokens=48))
        check_answers(responses, n=4)
        assert_serves_a_plain_request(srv)
        assert "Exception in thread" not in srv.log() and "engine thread died" not in srv.log()


def test_a_burst_with_the_default_queue_is_answered(server: RunningServer) -> None:
    """About 70 simultaneous n = 4 requests on the default queue (64 waiting) of the session server."""
    responses = asyncio.run(burst(server, count=70, n=4, max_tokens=4))
    check_answers(responses, n=4)
    assert_serves_a_plain_request(server)


def test_an_injected_fault_fails_only_its_request(tmp_path: Path) -> None:
    manager = running_server(tmp_path, config=FAULTS)
    try:
        srv = manager.__enter__()
    except RuntimeError as exc:
        if "test_faults" not in str(exc):
            raise
        pytest.skip("this server refuses [server] test_faults (the fault seam's config key is not wired yet)")
    try:

        async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.base_url, timeout=DEADLINE_S) as client:
                ok = client.post("/chat/completions", json=body(1, 1, 16))
                bad = client.post("/chat/completions", json=body(2, 1, 16), headers=FAULT_HEADER)
                bad_stream = client.post("/chat/completions", json=body(3, 1, 16, stream=True), headers=FAULT_HEADER)
                return tuple(await asyncio.gather(ok, bad, bad_stream))  # type: ignore[return-value]

        ok, bad, bad_stream = asyncio.run(main())
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
        assert bad.status_code == 500 and bad.json()["error"]["code"] == "internal_error", bad.text
        # The fault strikes before the first token: even a stream is refused with the status itself.
        assert bad_stream.status_code == 500 and "internal_error" in bad_stream.text, bad_stream.text
        assert_serves_a_plain_request(srv)
        assert "injected fault" in srv.log()
    finally:
        manager.__exit__(None, None, None)

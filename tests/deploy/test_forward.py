"""The ingress and the replica side of a forwarded request, without Ray: the real qwenhost app on a
FakeBackend answers in process; the ingress relays, retries a lost replica and cancels on disconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette

from qwenhost.api.app import create_app
from qwenhost.config import DASHSCOPE_ALIASES, ModelConfig, hash_key
from qwenhost.deploy.ray.forward import ForwardedRequest, ResponseStart, answer
from qwenhost.deploy.ray.ingress import REPLICA_LOST, Ingress, IngressConfig
from qwenhost.engine.fake import FakeBackend
from qwenhost.main import served_model
from qwenhost.ops.auth import KeyStore
from qwenhost.service.chat import ChatService
from qwenhost.service.models import ModelRegistry

PATH = "/compatible-mode/v1/chat/completions"
SYSTEM = "You are terse. " * 40
BODY = {"model": "qwen-plus", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]}
AUTH = {"Authorization": "Bearer k"}


class ReplicaGone(Exception):
    pass


def _replica_app(backend: FakeBackend) -> Starlette:
    registry = ModelRegistry(
        [served_model(ModelConfig(name="fake", path="unused", aliases=DASHSCOPE_ALIASES), backend)]
    )
    return create_app(ChatService(registry), KeyStore([("k", hash_key("k"))]), replica_id="r1")


def _request(body: dict[str, Any], path: str = PATH) -> ForwardedRequest:
    headers = ((b"content-type", b"application/json"), (b"authorization", b"Bearer k"))
    return ForwardedRequest("POST", path, b"", headers, json.dumps(body).encode())


async def _collect(items: AsyncIterator[ResponseStart | bytes]) -> tuple[ResponseStart, bytes]:
    start, body = None, b""
    async for item in items:
        if isinstance(item, ResponseStart):
            start = item
        else:
            body += item
    assert start is not None
    return start, body


def test_the_replica_answers_a_forwarded_request_with_its_own_app() -> None:
    start, body = asyncio.run(_collect(answer(_replica_app(FakeBackend()), _request(BODY))))
    assert start.status == 200 and (b"x-qwenhost-replica", b"r1") in start.headers
    assert json.loads(body)["choices"][0]["message"]["content"]
    start, body = asyncio.run(_collect(answer(_replica_app(FakeBackend()), _request({"model": "qwen-plus"}))))
    assert start.status == 400 and json.loads(body)["error"]["code"] == "invalid_parameter_error"


def test_closing_the_answer_early_aborts_the_engine_request() -> None:
    backend = FakeBackend(script=lambda r, c: "x" * 10_000, step_delay_s=0.01)

    async def go() -> None:
        stream = answer(_replica_app(backend), _request({**BODY, "stream": True}))
        chunks = 0
        async for item in stream:
            chunks += isinstance(item, bytes)
            if chunks == 3:
                break
        await stream.aclose()  # what Serve does when the ingress cancels the call

    asyncio.run(go())
    assert backend.in_flight == 0 and len(backend.aborted) == 1


def _ingress(call: Any, attempts: int = 3) -> Ingress:
    return Ingress(call, (ReplicaGone,), IngressConfig(attempts=attempts, retry_backoff_s=0.01))


async def _post(app: Ingress, path: str = PATH, body: dict[str, Any] = BODY) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post(path, json=body, headers=AUTH)


def test_the_ingress_relays_and_names_the_prefix_for_the_router() -> None:
    seen: list[ForwardedRequest] = []
    replica = _replica_app(FakeBackend())

    async def call(request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        seen.append(request)
        async for item in answer(replica, request):
            yield item

    r = asyncio.run(_post(_ingress(call)))
    assert r.status_code == 200 and r.headers["x-qwenhost-replica"] == "r1"
    assert seen[0].routing_text.startswith("qwen-plus\nsystem:You are terse.") and seen[0].path == PATH


def test_a_replica_lost_before_answering_is_retried_then_refused_in_the_dialect() -> None:
    attempts: list[int] = []
    replica = _replica_app(FakeBackend())

    async def flaky(request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        attempts.append(1)
        if len(attempts) < 3:
            raise ReplicaGone("actor died")
        async for item in answer(replica, request):
            yield item

    assert asyncio.run(_post(_ingress(flaky))).status_code == 200 and len(attempts) == 3

    async def dead(request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        raise ReplicaGone("actor died")
        yield b""  # unreachable: makes this an async generator like the others

    compat = asyncio.run(_post(_ingress(dead)))
    assert compat.status_code == 503 and compat.json()["error"]["message"] == REPLICA_LOST
    native = asyncio.run(_post(_ingress(dead), "/api/v1/services/aigc/text-generation/generation"))
    assert native.status_code == 503 and native.json()["code"] == "ServiceUnavailable"


def test_a_replica_lost_mid_stream_ends_it_with_an_error_event() -> None:
    async def dies(request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        yield ResponseStart(200, ((b"content-type", b"text/event-stream"),))
        yield b'data: {"choices": []}\n\n'
        raise ReplicaGone("actor died")

    r = asyncio.run(_post(_ingress(dies)))
    frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]" and json.loads(frames[-2])["error"]["message"] == REPLICA_LOST


def test_a_client_disconnect_cancels_the_call() -> None:
    closed = asyncio.Event()

    async def endless(request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        try:
            yield ResponseStart(200, ((b"content-type", b"text/event-stream"),))
            while True:
                await asyncio.sleep(0.01)
                yield b"data: {}\n\n"
        finally:
            closed.set()

    async def go() -> None:
        body = json.dumps(BODY).encode()
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            return None

        scope = {"type": "http", "method": "POST", "path": PATH, "headers": [], "query_string": b""}
        task = asyncio.ensure_future(_ingress(endless)(scope, receive, send))
        await asyncio.sleep(0.05)
        gone.set()
        await asyncio.wait_for(task, 5)
        await asyncio.wait_for(closed.wait(), 5)

    asyncio.run(go())

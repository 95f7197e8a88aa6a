"""The real ``dashscope`` SDK (pinned 2.0.2) against the real server's native protocol under /api/v1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import RunningServer, running_server

dashscope = pytest.importorskip("dashscope")
pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Say hello."}]
CHEAP: dict[str, Any] = {"model": "qwen-plus", "max_tokens": 8, "seed": 1, "api_key": "sk-local-test"}


@pytest.fixture(autouse=True)
def native_base(server: RunningServer) -> Iterator[None]:
    saved = dashscope.base_http_api_url
    dashscope.base_http_api_url = server.root + "/api/v1"
    yield
    dashscope.base_http_api_url = saved


def test_message_format() -> None:
    rsp = dashscope.Generation.call(messages=MESSAGES, result_format="message", **CHEAP)
    assert rsp.status_code == HTTPStatus.OK, (rsp.code, rsp.message)
    choice = rsp.output.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert rsp.usage.input_tokens > 0 and rsp.usage.output_tokens > 0 and rsp.request_id
    assert rsp.usage.total_tokens == rsp.usage.input_tokens + rsp.usage.output_tokens


def test_text_format_with_prompt() -> None:
    rsp = dashscope.Generation.call(prompt="Say hello.", result_format="text", **CHEAP)
    assert rsp.status_code == HTTPStatus.OK, (rsp.code, rsp.message)
    assert isinstance(rsp.output.text, str) and rsp.output.choices is None
    assert rsp.output.finish_reason in ("stop", "length")


def _stream(incremental: bool) -> list[Any]:
    chunks = list(
        dashscope.Generation.call(
            messages=MESSAGES, result_format="message", stream=True, incremental_output=incremental, **CHEAP
        )
    )
    assert chunks and all(c.status_code == HTTPStatus.OK for c in chunks), [(c.code, c.message) for c in chunks]
    reasons = [c.output.choices[0].finish_reason for c in chunks]
    assert set(reasons[:-1]) <= {"null"} and reasons[-1] in ("stop", "length")
    outputs = [c.usage.output_tokens for c in chunks]
    assert outputs == sorted(outputs) and outputs[-1] > 0  # cumulative usage in every event
    return chunks


def test_streams_agree_incremental_and_cumulative() -> None:
    incremental = "".join(c.output.choices[0].message.content for c in _stream(True))
    cumulative = _stream(False)[-1].output.choices[0].message.content  # the SDK merges, the seed fixes the text
    assert incremental == cumulative and incremental


def test_errors_are_values() -> None:
    rsp = dashscope.Generation.call(messages=MESSAGES, **{**CHEAP, "model": "qwen-nonexistent"})
    assert (rsp.status_code, rsp.code) == (404, "ModelNotFound") and rsp.output is None
    rsp = dashscope.Generation.call(messages=MESSAGES, temperature=5, **CHEAP)
    assert (rsp.status_code, rsp.code) == (400, "InvalidParameter") and "Temperature" in rsp.message
    chunks = list(dashscope.Generation.call(messages=MESSAGES, top_p=0, stream=True, **CHEAP))
    assert [(c.status_code, c.code) for c in chunks] == [(400, "InvalidParameter")]


def test_aio_generation_streams() -> None:
    async def main() -> list[Any]:
        stream = await dashscope.AioGeneration.call(
            messages=MESSAGES, result_format="message", stream=True, incremental_output=True, **CHEAP
        )
        chunks = [c async for c in stream]
        closer = getattr(dashscope, "close_shared_aio_session", None)
        if closer is not None:
            await closer()
        return chunks

    chunks = asyncio.run(main())
    assert chunks and all(c.status_code == HTTPStatus.OK for c in chunks)
    assert chunks[-1].output.choices[0].finish_reason in ("stop", "length")


def test_multimodal_route_answers_in_parts() -> None:
    messages = [{"role": "user", "content": [{"text": "Say hello."}]}]
    rsp = dashscope.MultiModalConversation.call(messages=messages, **CHEAP)
    assert rsp.status_code == HTTPStatus.OK, (rsp.code, rsp.message)
    content = rsp.output.choices[0].message.content
    assert isinstance(content, list) and isinstance(content[0]["text"], str)


def test_api_key_is_checked(tmp_path: Path) -> None:
    with running_server(tmp_path, ("--api-key", "sk-one", "--context-length", "2048", "--parallel", "1")) as srv:
        base = srv.root + "/api/v1"
        ok = dashscope.Generation.call(messages=MESSAGES, base_address=base, **{**CHEAP, "api_key": "sk-one"})
        assert ok.status_code == HTTPStatus.OK, (ok.code, ok.message)
        bad = dashscope.Generation.call(messages=MESSAGES, base_address=base, **{**CHEAP, "api_key": "sk-wrong"})
        assert (bad.status_code, bad.code, bad.message) == (401, "InvalidApiKey", "Invalid API-key provided.")
        kw = {**CHEAP, "api_key": "sk-wrong"}
        chunks = list(dashscope.Generation.call(messages=MESSAGES, base_address=base, stream=True, **kw))
        assert [(c.status_code, c.code) for c in chunks] == [(401, "InvalidApiKey")]

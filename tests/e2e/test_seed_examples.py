"""The seed reference's own examples, run unchanged against the real server on the embedded model."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from tests.support.server import RunningServer

pytestmark = pytest.mark.e2e

SEED_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Who are you?"},
]


def test_python_basic(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="qwen-plus", messages=SEED_MESSAGES, max_tokens=40)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "qwen-plus"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens is not None


def test_python_streaming_include_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="qwen-plus",
        messages=SEED_MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=30,
    )
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].delta.content == ""
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert last.usage.completion_tokens >= 1 and text


def test_streaming_without_usage_sends_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="qwen-plus", messages=SEED_MESSAGES, stream=True, max_tokens=8))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_async_client(aclient: openai.AsyncOpenAI) -> None:
    async def main() -> str:
        response = await aclient.chat.completions.create(
            messages=[{"role": "user", "content": "Who are you?"}], model="qwen-plus", max_tokens=20
        )
        return response.choices[0].message.content or ""

    assert asyncio.run(main())


def test_curl_style_raw_http(server: RunningServer) -> None:
    body = {"model": "qwen-plus", "messages": SEED_MESSAGES, "max_tokens": 16}
    r = httpx.post(
        f"{server.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-anything"}, timeout=60
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    data = r.json()
    keys = ["choices", "object", "usage", "created", "system_fingerprint", "service_tier", "model", "id"]
    assert list(data) == keys
    assert data["choices"][0]["logprobs"] is None and data["service_tier"] is None
    # The keys the spec's field lists show as null are present as null (spec §2.1, §2.2).
    message = data["choices"][0]["message"]
    assert message["refusal"] is None and message["audio"] is None and message["function_call"] is None
    assert data["usage"]["completion_tokens_details"] is None
    assert data["usage"]["prompt_tokens_details"]["audio_tokens"] is None


def test_curl_style_raw_streaming(server: RunningServer) -> None:
    body = {"model": "qwen-plus", "messages": SEED_MESSAGES, "stream": True, "max_tokens": 8}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"content": "", "role": "assistant"}
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks)


def test_same_routes_under_v1(server: RunningServer) -> None:
    r = httpx.post(
        f"{server.root}/v1/chat/completions",
        json={"model": "qwen-plus", "messages": SEED_MESSAGES, "max_tokens": 4},
        timeout=60,
    )
    assert r.status_code == 200


def test_models_lists_aliases(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"qwen-plus", "qwen-turbo", "qwen-flash", "qwen-max", "smollm2-135m-instruct"} <= ids

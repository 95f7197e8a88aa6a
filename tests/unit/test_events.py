"""fold() is the one assembler of messages; render turns events into DashScope chunks."""

from __future__ import annotations

from qwenhost.api.render import ChunkRenderer, completion_json, usage_json
from qwenhost.core.events import (
    ContentDelta,
    Finish,
    ReasoningDelta,
    RoleStart,
    ToolCallArgsDelta,
    ToolCallStart,
    UsageReport,
    fold,
)
from qwenhost.core.types import CacheReport, TokenLogprob, Usage

USAGE = Usage(prompt_tokens=10, completion_tokens=5, cache=CacheReport(cached_tokens=4))


def test_fold_assembles_choices_tool_calls_and_usage() -> None:
    events = [
        RoleStart(0),
        RoleStart(1),
        ContentDelta(0, "Hel"),
        ContentDelta(1, "Bye"),
        ContentDelta(0, "lo"),
        ToolCallStart(1, 0, "call_1", "f"),
        ToolCallArgsDelta(1, 0, '{"a":'),
        ToolCallArgsDelta(1, 0, " 1}"),
        Finish(0, "stop"),
        Finish(1, "tool_calls"),
        UsageReport(USAGE),
    ]
    answer = fold(events)
    assert [c.content for c in answer.choices] == ["Hello", "Bye"]
    assert answer.choices[1].tool_calls[0].arguments == '{"a": 1}'
    assert answer.choices[1].finish_reason == "tool_calls"
    assert answer.choices[0].reasoning_content is None
    assert answer.usage == USAGE


def test_fold_reasoning_only_when_thinking() -> None:
    answer = fold([RoleStart(0, is_thinking=True), ReasoningDelta(0, "hmm"), ContentDelta(0, "A"), Finish(0, "stop")])
    assert answer.choices[0].reasoning_content == "hmm"
    empty = fold([RoleStart(0, is_thinking=True), ContentDelta(0, "A"), Finish(0, "stop")])
    assert empty.choices[0].reasoning_content == ""


def test_chunk_shapes_follow_dashscope() -> None:
    r = ChunkRenderer("chatcmpl-x", "qwen-plus", 123)
    first = r.render(RoleStart(0))
    assert first is not None
    assert list(first) == ["choices", "object", "usage", "created", "system_fingerprint", "model", "id"]
    assert first["choices"][0] == {
        "delta": {"content": "", "role": "assistant"},
        "finish_reason": None,
        "index": 0,
        "logprobs": None,
    }
    finish = r.render(Finish(0, "stop"))
    assert finish is not None and finish["choices"][0]["delta"] == {"content": ""}
    usage = r.render(UsageReport(USAGE))
    assert usage is not None and usage["choices"] == [] and usage["usage"]["total_tokens"] == 15


def test_thinking_chunk_shapes() -> None:
    r = ChunkRenderer("chatcmpl-x", "m", 1, is_thinking=True)
    first = r.render(RoleStart(0, is_thinking=True))
    assert first is not None and first["choices"][0]["delta"] == {
        "content": None,
        "role": "assistant",
        "reasoning_content": "",
    }
    finish = r.render(Finish(0, "stop"))
    assert finish is not None and finish["choices"][0]["delta"] == {"content": "", "reasoning_content": None}


def test_tool_call_delta_shapes() -> None:
    r = ChunkRenderer("chatcmpl-x", "m", 1)
    start = r.render(ToolCallStart(0, 0, "call_abc", "get_weather"))
    more = r.render(ToolCallArgsDelta(0, 0, '{"city": "x"}'))
    assert start is not None and more is not None
    assert start["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    ]
    assert more["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "", "type": "function", "function": {"arguments": '{"city": "x"}'}}
    ]


def test_logprobs_and_completion_body() -> None:
    lp = TokenLogprob("Hi", (72, 105), -0.25)
    answer = fold([RoleStart(0), ContentDelta(0, "Hi", (lp,)), Finish(0, "length"), UsageReport(USAGE)])
    body = completion_json(answer, "chatcmpl-1", "qwen-plus", 5)
    assert body["choices"][0]["logprobs"] == {
        "content": [{"token": "Hi", "bytes": [72, 105], "logprob": -0.25, "top_logprobs": []}]
    }
    # The keys DashScope's field list shows as always null are present as null (spec §2.1, §2.2).
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hi",
        "refusal": None,
        "audio": None,
        "function_call": None,
    }
    assert body["service_tier"] is None and body["usage"]["completion_tokens_details"] is None
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 4, "audio_tokens": None}


def test_explicit_cache_usage_fields() -> None:
    usage = Usage(prompt_tokens=2000, completion_tokens=3, cache=CacheReport(0, 1536, is_explicit=True))
    details = usage_json(usage)["prompt_tokens_details"]
    assert details == {
        "cached_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 1536},
        "cache_creation_input_tokens": 1536,
        "cache_type": "ephemeral",
        "audio_tokens": None,
    }

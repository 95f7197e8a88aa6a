"""The chat service with tools and response_format on the FakeBackend: request rules (spec §3.3, §4.4,
§4.6, §4.7), parser choice, finish_reason and the streamed delta shapes (spec §2.4)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from qwenhost.api.render import ChunkRenderer
from qwenhost.api.wire.request import parse_chat_request
from qwenhost.config import ModelConfig
from qwenhost.core.errors import InvalidParameter, ServeError
from qwenhost.core.events import ChatEvent, FoldedAnswer, ToolCallArgsDelta, ToolCallStart, fold
from qwenhost.engine.fake import FakeBackend
from qwenhost.engine.protocol import GenerationRequest
from qwenhost.main import served_model
from qwenhost.service.chat import ChatService
from qwenhost.service.models import ModelRegistry

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_current_time", "description": "time", "parameters": {}}},
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        },
    },
]
CALL = '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "杭州"}}\n</tool_call>'
TIME_CALL = '<tool_call>\n{"name": "get_current_time", "arguments": {}}\n</tool_call>'


def service(text: str, family: str | None = None) -> tuple[ChatService, FakeBackend]:
    backend = FakeBackend(script=lambda request, choice: text)
    model = served_model(ModelConfig(name="fake", aliases=("qwen-plus",), family=family), backend)
    return ChatService(ModelRegistry([model])), backend


def run(svc: ChatService, **body: Any) -> tuple[FoldedAnswer, list[ChatEvent], Any]:
    request = parse_chat_request({"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], **body})
    job = svc.prepare(request, request_id="r1")

    async def collect() -> list[ChatEvent]:
        return [e async for e in svc.run(job)]

    events = asyncio.run(collect())
    return fold(events), events, job


def test_a_call_ends_with_finish_reason_tool_calls_and_empty_content() -> None:
    svc, backend = service("Checking.\n" + CALL)
    answer, _, _ = run(svc, tools=TOOLS)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.content == "Checking."
    (call,) = choice.tool_calls
    assert call.name == "get_current_weather" and json.loads(call.arguments) == {"location": "杭州"}
    prompt = backend.requests[0]
    assert isinstance(prompt, GenerationRequest) and prompt.constraint is None  # no grammar on this backend


def test_streamed_chunks_have_dashscope_tool_deltas() -> None:
    svc, _ = service(CALL)
    _, events, job = run(svc, tools=TOOLS, stream=True)
    renderer = ChunkRenderer(job.completion_id, job.model_name, job.created)
    deltas = [c["choices"][0]["delta"] for e in events if (c := renderer.render(e)) and c["choices"]]
    tool = [d for d in deltas if "tool_calls" in d]
    assert tool[0]["content"] is None
    assert tool[0]["tool_calls"][0]["function"] == {"name": "get_current_weather", "arguments": ""}
    assert tool[0]["tool_calls"][0]["id"].startswith("call_")
    assert all(d["tool_calls"][0]["id"] == "" and "name" not in d["tool_calls"][0]["function"] for d in tool[1:])
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in tool) == '{"location": "杭州"}'
    assert not any(d.get("content") for d in deltas)


@pytest.mark.parametrize("tool_stream", [False, True])
def test_tool_stream_decides_whether_arguments_stream(tool_stream: bool) -> None:
    # DashScope's default (false) sends a call's arguments at once; true streams them (spec §1.3 #23).
    svc, _ = service(CALL + "\n" + TIME_CALL)
    answer, events, _ = run(svc, tools=TOOLS, stream=True, parallel_tool_calls=True, tool_stream=tool_stream)
    args = [e for e in events if isinstance(e, ToolCallArgsDelta)]
    by_call = {i: [e.text for e in args if e.index == i] for i in (0, 1)}
    assert "".join(by_call[0]) == '{"location": "杭州"}' and "".join(by_call[1]) == "{}"
    if tool_stream:
        assert len(by_call[0]) > 1
    else:
        assert [len(parts) for parts in by_call.values()] == [1, 1]
        # each call's arguments leave before the next call starts
        kinds = [type(e).__name__ for e in events if isinstance(e, ToolCallStart | ToolCallArgsDelta)]
        assert kinds == ["ToolCallStart", "ToolCallArgsDelta"] * 2
    assert [c.arguments for c in answer.choices[0].tool_calls] == ['{"location": "杭州"}', "{}"]


def test_parallel_tool_calls_false_keeps_one_call_true_keeps_all() -> None:
    svc, _ = service(CALL + "\n" + TIME_CALL)
    one, _, _ = run(svc, tools=TOOLS)
    assert [c.name for c in one.choices[0].tool_calls] == ["get_current_weather"]
    both, _, _ = run(svc, tools=TOOLS, parallel_tool_calls=True)
    assert [c.name for c in both.choices[0].tool_calls] == ["get_current_weather", "get_current_time"]


def test_tool_choice_none_reads_no_calls() -> None:
    svc, _ = service(CALL)
    answer, _, _ = run(svc, tools=TOOLS, tool_choice="none")
    assert answer.choices[0].content == CALL and answer.choices[0].finish_reason == "stop"


def test_truncated_call_finishes_with_length() -> None:
    svc, _ = service(CALL)
    answer, _, _ = run(svc, tools=TOOLS, max_tokens=60)
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].tool_calls[0].name == "get_current_weather"


def test_enforcement_needs_a_grammar_backend() -> None:
    svc, _ = service("{}")
    for body in (
        {"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "JSON please"}]},
        {"tools": TOOLS, "tool_choice": "required"},
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_current_time"}}},
    ):
        with pytest.raises(ServeError, match="cannot enforce"):
            run(svc, **body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "JSON please"}]},
            "Json mode response is not supported when enable_thinking is true",
        ),
        (
            {"tools": TOOLS, "tool_choice": "required"},
            "The tool_choice parameter does not support being set to required or object in thinking mode",
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_current_time"}}},
            "The tool_choice parameter does not support being set to required or object in thinking mode",
        ),
    ],
)
def test_thinking_mode_refuses_json_and_forced_tools(body: dict[str, Any], message: str) -> None:
    svc, _ = service("x", family="qwen3")
    request = parse_chat_request(
        {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], "stream": True, **body}
        | {"enable_thinking": True}
    )
    with pytest.raises(InvalidParameter) as caught:
        svc.prepare(request, request_id="r2")
    assert caught.value.message == message

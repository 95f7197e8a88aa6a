"""Request validation: every check that needs no model, with DashScope's verbatim messages (spec §3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from qwenhost.api.wire.request import parse_chat_request, read_chat
from qwenhost.api.wire.sampling import parse_stop
from qwenhost.core.errors import ALGO_PREFIX, ServeError
from qwenhost.core.types import MediaPart, NamedToolChoice, StopRule, TextPart

USER = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen-plus", "messages": USER, **fields}


def error_of(payload: Any) -> ServeError:
    with pytest.raises(ServeError) as info:
        parse_chat_request(payload)
    return info.value


@pytest.mark.parametrize(
    ("fields", "status", "code", "message"),
    [
        ({"temperature": 2.0}, 400, "invalid_parameter_error", ALGO_PREFIX + "Temperature should be in [0.0, 2.0)"),
        ({"temperature": -0.1}, 400, "invalid_parameter_error", ALGO_PREFIX + "Temperature should be in [0.0, 2.0)"),
        ({"temperature": "hot"}, 400, "invalid_parameter_error", "'temperature' must be Float"),
        ({"top_p": 0}, 400, "invalid_parameter_error", "Range of top_p should be (0.0, 1.0]"),
        ({"top_p": 1.01}, 400, "invalid_parameter_error", "Range of top_p should be (0.0, 1.0]"),
        ({"top_k": -1}, 400, "invalid_parameter_error", "Parameter top_k be greater than or equal to 0"),
        ({"presence_penalty": 2.5}, 400, "invalid_parameter_error", "Presence_penalty should be in [-2.0, 2.0]"),
        ({"repetition_penalty": 0}, 400, "invalid_parameter_error", "Repetition_penalty should be greater than 0.0"),
        ({"n": 5}, 400, "invalid_parameter_error", "Range of n should be [1, 4]"),
        ({"n": 0}, 400, "invalid_parameter_error", "Range of n should be [1, 4]"),
        ({"top_logprobs": 6}, 400, "invalid_parameter_error", "Range of top_logprobs should be [0, 5]"),
        ({"seed": -1}, 400, "invalid_value", "-1 is lesser than the minimum of 0 - 'seed'"),
        ({"seed": "x"}, 400, "invalid_value", "'seed' must be Integer"),
        ({"seed": 2**31}, 400, "invalid_value", "2147483648 is greater than the maximum of 2147483647 - 'seed'"),
        (
            {"stop": ["Hello", 104307]},
            400,
            "invalid_parameter_error",
            'The "stop" parameter must be of type "str", "list[str]", "list[int]", or "list[list[int]]", '
            "and all elements within the list must be of the same type.",
        ),
        (
            {"tool_choice": "always", "tools": []},
            400,
            "invalid_parameter_error",
            'tool_choice is one of the strings that should be ["none", "auto"]',
        ),
        (
            {"response_format": {"type": "yaml"}},
            400,
            "invalid_parameter_error",
            "Unknown format of response_format, response_format should be a dict, includes 'type' and an "
            "optional key 'json_schema'. The response_format type from user is yaml.",
        ),
    ],
)
def test_parameter_errors(fields: dict[str, Any], status: int, code: str, message: str) -> None:
    err = error_of(body(**fields))
    assert (err.status, err.code, err.message) == (status, code, message)


def test_developer_role_is_refused_with_dashscope_text() -> None:
    err = error_of(body(messages=[{"role": "developer", "content": "x"}, *USER]))
    assert (
        err.message
        == "developer is not one of ['system', 'assistant', 'user', 'tool', 'function'] - 'messages.[0].role'"
    )


def test_missing_model() -> None:
    err = error_of({"messages": USER})
    assert err.message == "you must provide a model parameter."


def test_body_must_be_object() -> None:
    assert error_of([1, 2]).message == "Required body invalid, please check the request body format."


def test_empty_and_missing_messages() -> None:
    assert error_of(body(messages=[])).message == "[] is too short"
    assert "must exist" in error_of({"model": "m"}).message


def test_system_only_conversation() -> None:
    err = error_of(body(messages=[{"role": "system", "content": "s"}]))
    assert err.message.startswith(
        ALGO_PREFIX + 'The messages list should not contain only one message with role "system"'
    )


def test_tool_message_without_tool_calls() -> None:
    err = error_of(body(messages=[*USER, {"role": "tool", "content": "x", "tool_call_id": "a"}]))
    assert err.message == 'messages with role "tool" must be a response to a preceding message with "tool_calls"'


def test_tool_calls_without_responses() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    messages = [*USER, {"role": "assistant", "content": "", "tool_calls": calls}, {"role": "user", "content": "?"}]
    err = error_of(body(messages=messages))
    assert err.message.startswith('An assistant message with "tool_calls" must be followed by tool messages')


def test_reserved_tool_name() -> None:
    tools = [{"type": "function", "function": {"name": "search", "description": "d", "parameters": {}}}]
    assert error_of(body(tools=tools)).message == "Tool names are not allowed to be [search]"


def test_content_is_required() -> None:
    assert error_of(body(messages=[{"role": "user"}])).message == "The content field is a required field."


def test_unknown_content_part() -> None:
    err = error_of(body(messages=[{"role": "user", "content": [{"type": "hologram"}]}]))
    assert "Unexpected item type in content" in err.message


def test_unknown_fields_are_ignored_and_named() -> None:
    wire = read_chat(body(user="u1", store=True, metadata={"a": 1}, service_tier="auto", stream_options={"x": 1}))
    assert wire.request.model == "qwen-plus"
    assert wire.ignored == ("metadata", "service_tier", "store", "user", "stream_options.x")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stream": True, "stream_options": {"include_usage": "false"}}, "'include_usage' must be Boolean"),
        ({"skill": [{"type": "ppt"}]}, "This model does not support skill."),
        ({"clear_thinking": False}, "This model does not support clear_thinking."),
        ({"thinking": {"type": "enabled"}}, "'thinking' must be an object whose type is"),
        ({"thinking": {"type": "disabled"}, "enable_thinking": True}, "thinking and enable_thinking disagree"),
        ({"tools": [{"type": "function", "function": {"name": "wetter_é"}}]}, "Required parameter(s) missing"),
        ({"tools": [{"type": "function", "function": {"name": "f" * 65}}]}, "Required parameter(s) missing"),
        ({"tools": [{"type": "function", "function": {"name": "f", "description": 3}}]}, "Required parameter(s)"),
    ],
)
def test_audit_refusals(fields: dict[str, Any], message: str) -> None:
    err = error_of(body(**fields))
    assert err.status == 400 and message in err.message


def test_minimax_thinking_maps_onto_enable_thinking() -> None:
    assert parse_chat_request(body(thinking={"type": "disabled"})).enable_thinking is False
    assert parse_chat_request(body(thinking={"type": "adaptive"})).enable_thinking is None  # the model's default
    assert parse_chat_request(body(thinking={"type": "adaptive"}, enable_thinking=True)).enable_thinking is True


def test_sampling_and_limits_are_carried() -> None:
    request = parse_chat_request(
        body(
            temperature=0,
            top_p=1,
            top_k=101,
            presence_penalty=-2,
            seed=7,
            n=3,
            max_tokens=12,
            logprobs=True,
            top_logprobs=5,
            stream=True,
            stream_options={"include_usage": True},
            parallel_tool_calls=True,
        )
    )
    assert request.sampling.temperature == 0 and request.sampling.top_p == 1
    assert request.sampling.top_k_disabled  # > 100 disables top_k (spec §1.3 #9)
    assert request.sampling.seed == 7 and request.n == 3 and request.max_tokens == 12
    assert request.logprobs and request.top_logprobs == 5
    assert request.parallel_tool_calls


def test_include_usage_only_when_streaming() -> None:
    assert read_chat(body(stream=True, stream_options={"include_usage": True})).include_usage
    assert not read_chat(body(stream_options={"include_usage": True})).include_usage


def test_null_top_k_disables_it() -> None:
    assert parse_chat_request(body(top_k=None)).sampling.top_k_disabled
    assert not parse_chat_request(body()).sampling.top_k_disabled


def test_content_parts_and_cache_markers() -> None:
    content = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}, "max_pixels": 1000},
        {"type": "video", "video": ["u1", "u2", "u3", "u4"], "fps": 1},
        {"type": "input_audio", "input_audio": {"data": "data:;base64,AA", "format": "wav"}},
    ]
    request = parse_chat_request(body(messages=[{"role": "user", "content": content}]))
    parts = request.messages[0].content
    assert isinstance(parts, tuple)
    assert parts[0] == TextPart("a", cache_control=True)
    assert isinstance(parts[1], MediaPart) and parts[1].kind == "image" and parts[1].max_pixels == 1000
    assert isinstance(parts[2], MediaPart) and parts[2].kind == "video_frames" and len(parts[2].sources) == 4
    assert isinstance(parts[3], MediaPart) and parts[3].audio_format == "wav"
    assert request.has_cache_markers


def test_named_tool_choice_and_partial() -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "description": "d", "parameters": {}}}]
    request = parse_chat_request(
        body(
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            messages=[*USER, {"role": "assistant", "content": "Once", "partial": True}],
        )
    )
    assert request.tool_choice == NamedToolChoice("get_time")
    assert request.is_partial


def test_json_schema_strict_beside_or_inside() -> None:
    schema = {"type": "object"}
    inside = parse_chat_request(
        body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}})
    )
    beside = parse_chat_request(
        body(response_format={"type": "json_schema", "strict": True, "json_schema": {"name": "x", "schema": schema}})
    )
    assert inside.response_format is not None and inside.response_format.strict
    assert beside.response_format is not None and beside.response_format.strict


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, StopRule()),
        ("END", StopRule(strings=("END",))),
        (["a", "b"], StopRule(strings=("a", "b"))),
        ([5, 6], StopRule(token_sequences=((5,), (6,)))),
        ([[5, 6], [7]], StopRule(token_sequences=((5, 6), (7,)))),
    ],
)
def test_stop_forms(value: Any, expected: StopRule) -> None:
    assert parse_stop(value) == expected


@pytest.mark.parametrize("value", [3, [["a"]], [1, [2]], {"a": 1}, [True]])
def test_stop_bad_forms(value: Any) -> None:
    with pytest.raises(ServeError):
        parse_stop(value)

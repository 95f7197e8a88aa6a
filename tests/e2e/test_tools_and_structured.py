"""Tool calling and structured output end to end: the official openai SDK against the real server on
the embedded SmolLM2-135M model (spec §2.4, §3.3, §4.6, §4.7)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest

from tests.support.server import RunningServer

pytestmark = pytest.mark.e2e

# The seed reference's tool example, verbatim apart from the comments (seed §ツール呼び出し).
SEED_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_time",
            "description": "現在時刻を知りたい場合に役立ちます。",
            "parameters": {},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "特定の都市の天気を確認したい場合に役立ちます。",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "北京や杭州、余杭区などの都市または地区。"}
                },
                "required": ["location"],
            },
        },
    },
]
SEED_MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "杭州の天気はどうですか?"}]
# Japanese costs a 135M byte-level model many tokens per character; English keeps the shape tests short.
EN_MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather like in Hangzhou?"}]
WEATHER_CHOICE: dict[str, Any] = {"type": "function", "function": {"name": "get_current_weather"}}
CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in SEED_TOOLS}


def assert_valid_call(call: Any) -> dict[str, Any]:
    assert CALL_ID.match(call.id), call.id
    assert call.type == "function"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, PARAMETERS[call.function.name] or {"type": "object", "maxProperties": 0})
    return dict(arguments)


def test_seed_example_auto_is_well_formed(aclient: openai.AsyncOpenAI) -> None:
    """The model decides; whatever it decides comes back well-formed (a 135M model rarely calls)."""

    async def one(seed: int) -> Any:
        return await aclient.chat.completions.create(
            model="qwen-plus", messages=SEED_MESSAGES, tools=SEED_TOOLS, seed=seed, max_tokens=24
        )

    async def main() -> list[Any]:
        return await asyncio.gather(*(one(s) for s in range(4)))

    for completion in asyncio.run(main()):
        choice = completion.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
            assert_valid_call(choice.message.tool_calls[0])
        else:
            assert choice.finish_reason in ("stop", "length")
            assert "<tool_call>" not in (choice.message.content or "")


def test_seed_example_forced_tool(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="qwen-plus",
        messages=SEED_MESSAGES,
        tools=SEED_TOOLS,
        tool_choice=WEATHER_CHOICE,
        temperature=0,  # a sampled 135M model can ramble inside a string until max_tokens; greedy ends it
        max_tokens=60,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == ""  # spec §4.7: "" alongside tool calls, not null
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_current_weather"
    assert isinstance(assert_valid_call(call)["location"], str)


def test_forced_tool_without_parameters(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": "今何時ですか?"}],
        tools=SEED_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_current_time"}},
        max_tokens=30,
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.name == "get_current_time" and call.function.arguments == "{}"


def test_full_loop_call_result_answer(client: openai.OpenAI) -> None:
    messages: list[Any] = list(SEED_MESSAGES)
    first = client.chat.completions.create(
        model="qwen-plus",
        messages=messages,
        tools=SEED_TOOLS,
        tool_choice=WEATHER_CHOICE,
        temperature=0,
        max_tokens=60,
    )
    message = first.choices[0].message
    messages.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls or []:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "杭州は晴れ、気温は24度です。"})
    final = client.chat.completions.create(model="qwen-plus", messages=messages, tools=SEED_TOOLS, max_tokens=24)
    answer = final.choices[0]
    assert answer.finish_reason in ("stop", "length", "tool_calls")
    if answer.message.tool_calls:
        assert_valid_call(answer.message.tool_calls[0])
    else:
        assert answer.message.content and "<tool_call>" not in answer.message.content
    usage, before = final.usage, first.usage
    assert usage is not None and before is not None
    assert usage.prompt_tokens > before.prompt_tokens + before.completion_tokens  # call and result are in the prompt


def _raw_chunks(server: RunningServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_streamed_tool_call_deltas_match_dashscope(server: RunningServer) -> None:
    body = {
        "model": "qwen-plus",
        "messages": EN_MESSAGES,
        "tools": SEED_TOOLS,
        "tool_choice": WEATHER_CHOICE,
        "stream": True,
        "tool_stream": True,  # arguments streamed as generated (DashScope's default sends them at once)
        "temperature": 0,
        "max_tokens": 60,
    }
    chunks = _raw_chunks(server, body)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"content": "", "role": "assistant"}
    tool_deltas = [d for d in deltas if d.get("tool_calls")]
    first = tool_deltas[0]
    assert first["content"] is None
    (call,) = first["tool_calls"]
    assert list(call) == ["index", "id", "type", "function"]
    assert call["index"] == 0 and CALL_ID.match(call["id"]) and call["type"] == "function"
    assert call["function"] == {"name": "get_current_weather", "arguments": ""}
    assert len(tool_deltas) > 2  # the arguments arrive in fragments
    for d in tool_deltas[1:]:
        (more,) = d["tool_calls"]
        assert more["index"] == 0 and more["id"] == "" and more["type"] == "function"
        assert list(more["function"]) == ["arguments"]  # no name key after the first fragment
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in tool_deltas)
    jsonschema.validate(json.loads(arguments), PARAMETERS["get_current_weather"])
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "tool_calls" and last["delta"] == {"content": ""}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])

    # tool_stream false (the default, spec §1.3 #23): the name, then the whole arguments in one delta.
    at_once = [c["choices"][0]["delta"] for c in _raw_chunks(server, {**body, "tool_stream": False})]
    (name_delta, args_delta) = [d for d in at_once if d.get("tool_calls")]
    assert name_delta["tool_calls"][0]["function"]["arguments"] == ""
    assert args_delta["tool_calls"][0]["function"] == {"arguments": arguments}

    # The same request without streaming gives the same call (one pipeline, two renderings).
    whole = httpx.post(f"{server.base_url}/chat/completions", json={**body, "stream": False}, timeout=120).json()
    (call_whole,) = whole["choices"][0]["message"]["tool_calls"]
    assert call_whole["function"] == {"name": "get_current_weather", "arguments": arguments}
    assert whole["choices"][0]["finish_reason"] == "tool_calls"


def test_sdk_reassembles_streamed_calls(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="qwen-plus",
        messages=EN_MESSAGES,  # type: ignore[arg-type]
        tools=SEED_TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        temperature=0,
        max_tokens=60,
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == ""
    (call,) = choice.message.tool_calls or []
    assert_valid_call(call)


def test_parallel_calls_each_get_an_index_and_id(server: RunningServer) -> None:
    body = {
        "model": "qwen-plus",
        "messages": EN_MESSAGES,
        "tools": SEED_TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": True,
        "stream": True,
        "seed": 3,
        "max_tokens": 40,
    }
    chunks = _raw_chunks(server, body)
    fragments = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls") or []]
    starts = [f for f in fragments if f["id"]]
    assert [f["index"] for f in starts] == list(range(len(starts))) and len({f["id"] for f in starts}) == len(starts)
    finish = chunks[-1]["choices"][0]["finish_reason"]
    complete = len(starts) if finish == "tool_calls" else len(starts) - 1  # the last may be cut by max_tokens
    for index in range(complete):
        name = starts[index]["function"]["name"]
        arguments = "".join(f["function"]["arguments"] for f in fragments if f["index"] == index)
        jsonschema.validate(json.loads(arguments), PARAMETERS[name] or {"type": "object", "maxProperties": 0})


def test_parallel_tool_calls_false_means_one_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="qwen-plus", messages=EN_MESSAGES, tools=SEED_TOOLS, tool_choice="required", temperature=0, max_tokens=60
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls or []) == 1


def test_tool_choice_none_does_not_offer_the_tools(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="qwen-plus", messages=SEED_MESSAGES, max_tokens=1)
    none = client.chat.completions.create(
        model="qwen-plus", messages=SEED_MESSAGES, tools=SEED_TOOLS, tool_choice="none", max_tokens=1
    )
    assert plain.usage and none.usage and none.usage.prompt_tokens == plain.usage.prompt_tokens
    assert none.choices[0].message.tool_calls is None


# -- structured output ----------------------------------------------------------------------------

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"type": "string", "enum": ["Hangzhou", "Beijing", "Tokyo"]},
        "languages": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 2},
        "employed": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "languages", "employed"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
PERSON_MESSAGES = [{"role": "user", "content": "Invent a person who lives in China."}]


def test_json_schema_strict_validates_over_many_seeds(aclient: openai.AsyncOpenAI) -> None:
    async def one(seed: int) -> Any:
        return await aclient.chat.completions.create(
            model="qwen-plus",
            messages=PERSON_MESSAGES,  # type: ignore[arg-type]
            response_format=PERSON_FORMAT,  # type: ignore[arg-type]
            seed=seed,
            max_tokens=64,
        )

    async def main() -> list[Any]:
        return await asyncio.gather(*(one(s) for s in range(8)))

    for completion in asyncio.run(main()):
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), PERSON)


def test_json_schema_streamed_equals_non_streamed_and_n_choices(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": "qwen-plus",
        "messages": PERSON_MESSAGES,
        "response_format": PERSON_FORMAT,
        "seed": 42,
        "max_tokens": 64,
    }
    whole = client.chat.completions.create(**kwargs)
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True) if c.choices
    )
    assert streamed == whole.choices[0].message.content
    many = client.chat.completions.create(**{**kwargs, "n": 3, "seed": 9})
    assert [c.index for c in many.choices] == [0, 1, 2]
    for choice in many.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content or ""), PERSON)


class City(pydantic.BaseModel):
    name: str
    country: str
    population_millions: float


def test_sdk_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    """The SDK's own strict json_schema (additionalProperties false, every field required)."""
    completion = client.chat.completions.parse(
        model="qwen-plus",
        messages=[{"role": "user", "content": "Describe Hangzhou."}],
        response_format=City,
        seed=2,
        max_tokens=60,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City)


def test_json_object_and_truncation(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Reply in JSON with your name."}]
    completion = client.chat.completions.create(
        model="qwen-plus", messages=messages, response_format={"type": "json_object"}, seed=4, max_tokens=60
    )
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    else:
        assert (completion.choices[0].message.content or "").startswith("{")
    short = client.chat.completions.create(
        model="qwen-plus", messages=messages, response_format={"type": "json_object"}, max_tokens=3
    )
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content and short.choices[0].message.content.startswith("{")


# -- request errors (no generation: answered before the first byte) -----------------------------


def _error(client: openai.OpenAI, **kwargs: Any) -> openai.BadRequestError:
    body = {"model": "qwen-plus", "messages": SEED_MESSAGES, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    return caught.value


def test_json_object_needs_the_word_json(client: openai.OpenAI) -> None:
    err = _error(client, response_format={"type": "json_object"})
    assert err.body["message"] == (  # type: ignore[index]
        "<400> InternalError.Algo.InvalidParameter: 'messages' must contain the word 'json' in some form, "
        "to use 'response_format' of type 'json_object'."
    )
    assert err.body["code"] == "invalid_parameter_error"  # type: ignore[index]


def test_unknown_response_format(client: openai.OpenAI) -> None:
    err = _error(client, response_format={"type": "yaml"})
    assert err.body["message"] == (  # type: ignore[index]
        "Unknown format of response_format, response_format should be a dict, includes 'type' and an "
        "optional key 'json_schema'. The response_format type from user is yaml."
    )


def test_unsupported_schema_keyword_is_named(client: openai.OpenAI) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    err = _error(client, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert '"uniqueItems"' in err.body["message"]  # type: ignore[index]
    bad_tool = {"type": "function", "function": {"name": "f", "description": "", "parameters": {"not": {}}}}
    err = _error(client, tools=[bad_tool])
    assert "tools[0].function.parameters" in err.body["message"] and '"not"' in err.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"tools": SEED_TOOLS, "tool_choice": "always"},
            'tool_choice is one of the strings that should be ["none", "auto"]',
        ),
        ({"tools": SEED_TOOLS, "n": 2}, "The n parameter must be 1 when tools are provided."),
        (
            {"tools": [{"type": "function", "function": {"name": "search", "description": "", "parameters": {}}}]},
            "Tool names are not allowed to be [search]",
        ),
        ({"tool_choice": "required"}, "tool_choice 'required' needs at least one tool in 'tools'."),
    ],
)
def test_tool_request_errors(client: openai.OpenAI, kwargs: dict[str, Any], message: str) -> None:
    assert _error(client, **kwargs).body["message"] == message  # type: ignore[index]

"""Tool calls and structured output on a tiny random-weight Qwen3 GGUF, whose vocabulary has
``<tool_call>``/``</tool_call>`` and ``<think>``/``</think>`` as single special tokens, as real Qwen3 does.

The weights are random, so only constrained decoding makes the output well-formed: these tests prove
the grammar on special-token tags, the lazy trigger on the real engine (logit_bias makes the model
start a call by itself), and the tool parser inside the reasoning splitter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from tests.fixtures.tiny_qwen3 import token_id
from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen3"
USER = [{"role": "user", "content": "hi"}]
START_CALL = {str(token_id("<tool_call>")): 100}  # the model starts a call at once, unforced
# The vocabulary is byte-level: every character is a token, so calls need room.
COLOR: dict[str, Any] = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
    "required": ["color", "bright"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_current_time", "description": "time", "parameters": {}}},
    {"type": "function", "function": {"name": "pick_color", "description": "color", "parameters": COLOR}},
]
SCHEMAS = {"get_current_time": {"type": "object", "maxProperties": 0}, "pick_color": COLOR}


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = (
        f'[[models]]\nname = "{MODEL}"\npath = "{tiny_qwen3_gguf}"\nparallel = 2\ncontext_length = 1024\n'
        "threads = 1\nstream_only_thinking = false\n"
    )
    with running_server(tmp_path_factory.mktemp("tools-qwen3"), config=config) as srv:
        yield srv


@pytest.fixture(scope="module")
def qclient(qwen3: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=qwen3.base_url, api_key="sk-test", max_retries=0, timeout=60)


def check_calls(message: Any) -> list[str]:
    names = []
    for call in message.tool_calls or []:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
        names.append(call.function.name)
    return names


def test_a_call_the_model_starts_is_completed_validly(qclient: openai.OpenAI) -> None:
    for seed in range(3):
        completion = qclient.chat.completions.create(
            model=MODEL,
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            logit_bias=START_CALL,
            extra_body={"enable_thinking": False},
            seed=seed,
            max_tokens=160,
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == ""
        assert len(check_calls(choice.message)) == 1  # parallel_tool_calls=false: the turn ends after one


def test_calls_inside_a_thinking_turn_stream(qwen3: RunningServer, qclient: openai.OpenAI) -> None:
    chunks = list(
        qclient.chat.completions.create(
            model=MODEL,
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            logit_bias=START_CALL,
            parallel_tool_calls=True,
            stream=True,
            seed=1,
            max_tokens=200,
        )
    )
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and getattr(first, "reasoning_content", None) == ""  # a thinking turn
    starts = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or [] if tc.id]
    assert starts and [tc.index for tc in starts] == list(range(len(starts)))
    assert all(tc.function.name in SCHEMAS for tc in starts)
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_named_choice_with_special_token_tags(qclient: openai.OpenAI) -> None:
    for seed in range(3):
        completion = qclient.chat.completions.create(
            model=MODEL,
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "pick_color"}},
            extra_body={"enable_thinking": False},
            seed=seed,
            max_tokens=160,
        )
        assert completion.choices[0].finish_reason == "tool_calls"
        assert check_calls(completion.choices[0].message) == ["pick_color"]


def test_json_schema_on_random_weights(qclient: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}, "ok": {"type": "boolean"}},
        "required": ["n", "ok"],
        "additionalProperties": False,
    }
    for seed in range(3):
        completion = qclient.chat.completions.create(
            model=MODEL,
            messages=USER,  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}},
            extra_body={"enable_thinking": False},
            seed=seed,
            max_tokens=160,
        )
        assert completion.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(completion.choices[0].message.content or ""), schema)

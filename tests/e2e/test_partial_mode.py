"""Partial mode (spec §4.1) and thinking on the embedded SmolLM2 model, with the official openai SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "List the days of the week, separated by commas."}]
GREEDY: dict[str, Any] = {"model": "qwen-plus", "temperature": 0}


def partial(prefix: str) -> list[dict[str, Any]]:
    return [*QUESTION, {"role": "assistant", "content": prefix, "partial": True}]


@pytest.fixture(scope="module")
def reference(client: openai.OpenAI) -> tuple[str, list[str]]:
    """A greedy answer and its tokens: a prefix cut at a token boundary must be continued the same way."""
    done = client.chat.completions.create(messages=QUESTION, max_tokens=24, logprobs=True, **GREEDY)
    assert done.choices[0].logprobs is not None and done.choices[0].logprobs.content
    tokens = [t.token for t in done.choices[0].logprobs.content]
    assert len(tokens) == 24
    return done.choices[0].message.content or "", tokens


def test_partial_continues_the_prefix_and_returns_only_the_continuation(
    client: openai.OpenAI, reference: tuple[str, list[str]]
) -> None:
    text, tokens = reference
    prefix = "".join(tokens[:6])
    done = client.chat.completions.create(messages=partial(prefix), max_tokens=18, **GREEDY)
    assert done.choices[0].message.content == text[len(prefix) :]
    assert done.choices[0].finish_reason == "length"
    whole = client.chat.completions.create(messages=QUESTION, max_tokens=1, **GREEDY)
    assert done.usage is not None and whole.usage is not None
    assert done.usage.prompt_tokens == whole.usage.prompt_tokens + 6  # the prefix is billed as input
    assert done.usage.completion_tokens == 18


def test_partial_streamed_equals_non_streamed(client: openai.OpenAI, reference: tuple[str, list[str]]) -> None:
    text, tokens = reference
    prefix = "".join(tokens[:4])
    chunks = list(client.chat.completions.create(messages=partial(prefix), max_tokens=10, stream=True, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    done = client.chat.completions.create(messages=partial(prefix), max_tokens=10, **GREEDY)
    assert streamed == done.choices[0].message.content == text[len(prefix) :][: len(streamed)]
    assert not streamed.startswith(prefix)


def test_partial_with_stop(client: openai.OpenAI, reference: tuple[str, list[str]]) -> None:
    text, tokens = reference
    prefix = "".join(tokens[:6])
    rest = text[len(prefix) :]
    stop = "Tuesday"
    assert stop in rest
    done = client.chat.completions.create(messages=partial(prefix), max_tokens=18, stop=[stop], **GREEDY)
    assert done.choices[0].message.content == rest[: rest.index(stop)]
    assert done.choices[0].finish_reason == "stop"


def test_partial_false_and_earlier_partial_messages_are_ordinary_turns(client: openai.OpenAI) -> None:
    closed = [
        *QUESTION,
        {"role": "assistant", "content": "Monday", "partial": False},
        {"role": "user", "content": "ok"},
    ]
    done = client.chat.completions.create(messages=closed, max_tokens=4, **GREEDY)
    assert done.choices[0].message.content


def test_enable_thinking_is_refused_on_a_model_without_thinking(client: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model="qwen-plus", messages=QUESTION, max_tokens=4, stream=stream, extra_body={"enable_thinking": True}
            )
        assert err.value.status_code == 400
        message = "The model qwen-plus does not support enable_thinking."
        if stream:  # DashScope answers a refused stream with an SSE-formatted body (spec §3.1)
            assert f'"message":"{message}"' in str(err.value.body)
        else:
            assert isinstance(err.value.body, dict)
            code = "InvalidParameter.NotSupportEnableThinking"  # the catalogue's own code (spec §3.2)
            assert (err.value.body["message"], err.value.body["code"]) == (message, code)
    done = client.chat.completions.create(
        model="qwen-plus", messages=QUESTION, max_tokens=4, extra_body={"enable_thinking": False}
    )
    assert done.choices[0].message.content
    assert getattr(done.choices[0].message, "reasoning_content", None) is None
